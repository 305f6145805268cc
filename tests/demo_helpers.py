"""Shared by the demo tests (API-level and browser): synthetic-head videos and an oracle landmark detector
that knows them (dlib does not fire on cartoon heads).  ``detector()`` is what ``make demo
ARGS="--detector demo_helpers:detector"`` loads in the browser test's server."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

#: (identity, video, frames, size) of the videos the demo tests upload: a person to make an avatar of, a driver
VIDEOS = {"person": (7, 0, 12, 96), "driver": (6, 1, 10, 96)}
SEED = 3


def render(kind: str) -> tuple[np.ndarray, np.ndarray]:
    from conftest import synthetic_heads

    ident, vid, frames, size = VIDEOS[kind]
    heads = synthetic_heads(8, 2, seed=SEED)
    imgs, pts = zip(*(heads.render(ident, vid, float(t), size) for t in range(frames)))
    return np.stack(imgs), np.stack(pts)


def write_video(kind: str, path: Path) -> Path:
    from conftest import write_mp4

    write_mp4(path, render(kind)[0])
    return path


def write_y4m(kind: str, path: Path, fps: int = 10) -> Path:
    """The synthetic video as YUV4MPEG2 (4:2:0) at ``fps``: what Chromium's fake camera plays
    (``--use-file-for-fake-video-capture``), so the browser tests can record a driver with the webcam or drive live."""
    import cv2

    frames = render(kind)[0]
    h, w = frames.shape[1:3]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def chromium(camera: Path, binary: str, driver: str) -> Any:
    """Headless Chromium (Selenium) whose fake camera plays the y4m file ``camera`` (:func:`write_y4m`), camera
    access granted without asking: the browser tests' browser."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = binary
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              "--window-size=1280,1100", "--autoplay-policy=no-user-gesture-required", "--mute-audio",
              "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              f"--use-file-for-fake-video-capture={camera}"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(driver), options=opts)


def detector():
    from conftest import OracleDetector

    oracle = OracleDetector()
    for kind in VIDEOS:
        oracle.add(*render(kind))
    return oracle


def no_face_photo(path: Path) -> Path:
    """A grey photo with a few stripes: no face for any detector."""
    from PIL import Image

    img = np.full((96, 96, 3), 128, np.uint8)
    img[::8] = 30
    Image.fromarray(img).save(path)
    return path


class StaticHeadDetector:
    """The landmarks of the head of :func:`write_large_video` at whatever size its frames are decoded (the page
    scales uploads down while decoding, so no thumbnail oracle would match)."""

    name = "static-head"

    def __init__(self) -> None:
        frames, points = render("person")
        self.points = points[0].astype(np.float32)
        self.size = frames.shape[1]

    def detect(self, frames: np.ndarray) -> list[np.ndarray | None]:
        return [self.points * np.array([f.shape[1], f.shape[0]], np.float32) / self.size for f in frames]


def static_detector() -> StaticHeadDetector:
    """``--detector demo_helpers:static_detector`` for the server tests."""
    return StaticHeadDetector()


def write_large_video(path: Path, side: int = 2048, frames: int = 400) -> Path:
    """A small file that decodes to a lot of pixels: ``frames`` frames of ``side``² px, the synthetic head of
    :class:`StaticHeadDetector` held still (a shift every 50 frames), H.264 at a low quality."""
    import av
    import cv2

    head = cv2.resize(render("person")[0][0], (side, side), interpolation=cv2.INTER_LINEAR)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = side
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "28", "preset": "ultrafast"}
        still = av.VideoFrame.from_ndarray(head, format="rgb24")
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.roll(head, i // 50, axis=1), format="rgb24") if i % 50 == 0 else still
            frame.pts = i
            for pkt in stream.encode(frame):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path


REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def demo_server(root: Path, ckpt: str | Path, args: str, timeout: float = 120) -> Iterator[int]:
    """``make demo CKPT=ckpt ARGS="--port P --runs-dir root/runs --detector demo_helpers:detector <args>"`` with
    Gradio's temp folder under ``root`` and its output in ``root/server.log``; yields the port once it listens,
    stops the server on exit (terminate, then kill after 10 s). A server that exits or never listens is an
    AssertionError with the log's tail."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO), str(REPO / "tests")]),
               GRADIO_TEMP_DIR=str(root / "gradio"))
    full = f"--port {port} --runs-dir {root / 'runs'} --detector demo_helpers:detector {args}"
    log_path = root / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            ["make", "-s", "demo", f"CKPT={ckpt}", f"ARGS={full}", f"PYTHON={sys.executable}"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )
        try:
            end = time.time() + timeout
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"make demo exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.time() > end:
                    raise AssertionError(f"make demo did not start listening: {log_path.read_text()[-2000:]}")
                time.sleep(0.5)
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
