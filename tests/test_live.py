"""Live driving without a browser: LiveSession on a tiny checkpoint fed synthetic-head frames one at a time, its
bad-input handling, and the one-session-per-server lock."""

from __future__ import annotations

import math
from pathlib import Path

import demo_helpers
import numpy as np
import pytest
from finetune_helpers import tiny_checkpoint


@pytest.fixture(scope="module")
def avatar(tmp_path_factory):
    """An FF avatar (32² px) of the demo tests' person, made from its video with the oracle detector."""
    from talkinghead import api

    root = tmp_path_factory.mktemp("live")
    ckpt = tiny_checkpoint(root / "runs" / "tiny")
    meta = api.load_model(ckpt)
    made = api.make_avatar(demo_helpers.write_video("person", root / "person.mp4"), T=4, mode="FF", meta=meta,
                           out=root / "avatars" / "person" / "avatar.pt", detector=demo_helpers.detector())
    return made.path, meta


@pytest.fixture
def session(avatar):
    from talkinghead.live import LiveSession

    path, meta = avatar
    return LiveSession.from_file(path, meta, demo_helpers.detector(), backend="torch", interval_s=0.05)


def driver_frames() -> np.ndarray:
    return demo_helpers.render("driver")[0]  # (10, 96, 96, 3) uint8


def test_frames_come_out_at_the_avatars_size_and_follow_the_driver(session) -> None:
    import torch

    threads = torch.get_num_threads()
    outs = [session.process(f) for f in driver_frames()]
    assert torch.get_num_threads() == threads  # one render thread for the frame, then the caller's setting again
    assert all(o.shape == (32, 32, 3) and o.dtype == np.uint8 for o in outs)
    assert session.stats.rendered == 10 and session.stats.no_face == 0 and session.stats.skipped == 0
    assert max(np.abs(outs[0].astype(int) - o.astype(int)).max() for o in outs[1:]) > 0  # the avatar moves
    s = session.stats
    assert s.fps > 0 and math.isfinite(s.fps) and s.latency_ms > 0 and math.isfinite(s.latency_ms), s
    assert "frames/s" in s.markdown() and "latency" in s.markdown()


def test_a_frame_without_a_face_keeps_the_last_good_frame(session) -> None:
    frames = driver_frames()
    good = session.process(frames[0])
    wall = np.full((96, 96, 3), 128, np.uint8)
    wall[::8] = 30
    held = session.process(wall)
    assert np.array_equal(held, good)
    assert session.stats.no_face == 1 and session.stats.rendered == 1
    session.process(frames[1])
    assert session.stats.rendered == 2


@pytest.mark.parametrize("bad", [
    np.zeros((96, 96), np.uint8),  # grey
    np.zeros((96, 96, 4), np.uint8),  # RGBA
    np.zeros((96, 96, 3), np.float32),  # not uint8
    np.zeros((4, 4, 3), np.uint8),  # too small
    None,  # the camera sent nothing
    "not a frame",
])
def test_bad_input_is_skipped_without_raising(session, bad) -> None:
    good = session.process(driver_frames()[0])
    assert np.array_equal(session.process(bad), good)
    assert session.stats.skipped == 1 and session.stats.rendered == 1


def test_a_new_frame_size_starts_a_new_track(session) -> None:
    import cv2

    frames = driver_frames()
    session.process(frames[0])
    bigger = cv2.resize(frames[1], (192, 192), interpolation=cv2.INTER_LINEAR)
    out = session.process(bigger)
    assert out.shape == (32, 32, 3) and session.stats.rendered == 2 and session.stats.no_face == 0


def test_dropped_frames_are_estimated_from_the_arrival_gaps(avatar) -> None:
    from talkinghead.live import LiveSession

    path, meta = avatar
    s = LiveSession.from_file(path, meta, demo_helpers.detector(), backend="torch", interval_s=0.1)
    frames = driver_frames()
    for t, f in zip([0.0, 0.1, 0.2, 0.5, 0.6], frames):  # 0.2 -> 0.5: two frames not sent
        s.process(f, arrived=t)
    assert s.stats.dropped == 2


def test_the_lock_refuses_a_second_session_and_frees_on_stop_and_when_idle() -> None:
    from talkinghead.live import LiveLock

    now = [0.0]
    lock = LiveLock(idle_s=5.0, clock=lambda: now[0])
    assert lock.acquire("a") and lock.acquire("a")
    assert not lock.acquire("b")
    assert not lock.release("b") and lock.holder == "a"
    assert lock.release("a") and lock.holder is None
    assert lock.acquire("b")  # freed by stopping
    now[0] = 4.0
    assert not lock.acquire("a")  # b sent a frame 4 s ago
    now[0] = 9.5
    assert lock.idle() and lock.acquire("a")  # b sent nothing for 9.5 s > 5 s: a takes over
    assert lock.holder == "a" and not lock.acquire("b")


def test_the_demos_live_handlers_serve_one_session_and_free_it_on_stop(avatar, tmp_path) -> None:
    import shutil
    from types import SimpleNamespace

    from PIL import Image

    from talkinghead.demo import LIVE_FRAMES_KEPT, Demo, DemoConfig

    path, meta = avatar
    demo = Demo(DemoConfig(ckpt=str(meta.path), runs_dir=tmp_path / "runs", avatars_dir=tmp_path / "runs" / "avatars",
                           evaluate_dir=tmp_path / "runs" / "evaluate", detector=demo_helpers.detector(),
                           temp_base=tmp_path / "tmp", live_backend="torch"))
    try:
        a, b = SimpleNamespace(session_hash="aaaa"), SimpleNamespace(session_hash="bbbb")
        for req in (a, b):
            shutil.copytree(path.parent, demo.session_avatars(req) / "person")
        frames = driver_frames()
        out, status = demo.live_frame(frames[0], "person", request=a)
        assert np.asarray(Image.open(out)).shape == (32, 32, 3) and "frames/s" in status, status
        for i in range(LIVE_FRAMES_KEPT + 8):  # one JPEG a shown frame, in Gradio's cache: only the newest stay
            shown = demo.live_frame(frames[i % len(frames)], "person", request=a)[0]
        cached = [f for f in demo.server.gradio.rglob("*.jpeg")]
        assert Path(shown) in cached and 0 < len(cached) <= LIVE_FRAMES_KEPT, len(cached)
        out, status = demo.live_frame(frames[1], "person", request=b)
        assert out is None and "Another live session is running" in status and "wait" in status, status
        out, status = demo.live_frame(frames[1], "nobody", request=a)  # not an avatar of this session
        assert out is None and status.startswith("**Error:**") and "nobody" in status, status
        assert demo.live_frame(frames[1], "person", request=a)[0] is not None
        assert demo.live_stop(a) == "Live session ended."
        assert not list(demo.server.gradio.rglob("*.jpeg")), "the ended session's frames go with it"
        out, status = demo.live_frame(frames[2], "person", request=b)
        assert out is not None and "frames/s" in status, status
        demo.end_session(b)  # the page closed: its live session ends with it
        assert demo.live_lock.holder is None
    finally:
        demo.close()


def test_make_live_without_a_camera_says_so_in_one_line(avatar) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(repo / "src"), str(repo), str(repo / "tests")]))
    r = subprocess.run([sys.executable, "-m", "talkinghead.cli", "live", str(avatar[0]), "--camera", "97"],
                       check=False, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines == [("error: no camera 97: OpenCV cannot open it (give another CAMERA=, or use the demo page's "
                      "Live tab)")], r.stderr
