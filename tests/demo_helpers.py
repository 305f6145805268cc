"""Shared by the demo tests (API-level and browser): synthetic-head videos and an oracle landmark detector
that knows them (dlib does not fire on cartoon heads).  ``detector()`` is what ``make demo
ARGS="--detector demo_helpers:detector"`` loads in the browser test's server."""

from __future__ import annotations

from pathlib import Path

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


def write_y4m(kind: str, path: Path) -> Path:
    """The synthetic video as YUV4MPEG2 (4:2:0): what Chromium's fake camera plays
    (``--use-file-for-fake-video-capture``), so the browser test can record a driver with the webcam."""
    import cv2

    frames = render(kind)[0]
    h, w = frames.shape[1:3]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


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
