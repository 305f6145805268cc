"""Live driving without a browser: LiveSession on a tiny checkpoint fed synthetic-head frames one at a time, its
bad-input handling, and the one-session-per-server lock."""

from __future__ import annotations

import math
from pathlib import Path

import demo_helpers
import numpy as np
import pytest
from finetune_helpers import tiny_checkpoint

from talkinghead.inference.reenact import DriveOptions


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
    from talkinghead.inference.live import LiveSession

    path, meta = avatar
    return LiveSession.from_file(path, meta, demo_helpers.detector(), DriveOptions(backend="torch"), interval_s=0.05)


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
    from talkinghead.inference.live import LiveSession

    path, meta = avatar
    s = LiveSession.from_file(path, meta, demo_helpers.detector(), DriveOptions(backend="torch"), interval_s=0.1)
    frames = driver_frames()
    for t, f in zip([0.0, 0.1, 0.2, 0.5, 0.6], frames):  # 0.2 -> 0.5: two frames not sent
        s.process(f, arrived=t)
    assert s.stats.dropped == 2


def test_the_lock_refuses_a_second_session_and_frees_on_stop_and_when_idle() -> None:
    from talkinghead.inference.live import LiveLock

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
    now[0] = 14.0
    assert lock.acquire("a")  # a's own frames, none rendered: acquiring does not refresh its time
    now[0] = 15.0
    assert lock.acquire("b"), "a rendered nothing for 5.5 s > 5 s"
    lock.touch("a")  # no longer the holder: nothing happens
    now[0] = 19.0
    lock.touch("b")  # b rendered a frame
    now[0] = 23.0
    assert not lock.acquire("a"), "b rendered 4 s ago"


def test_a_skipped_frame_now_and_then_does_not_hold_the_live_slot(avatar, tmp_path) -> None:
    """A hostile client takes the live slot with one real frame, then sends a 1×1 frame every few tenths of a
    second: once the idle time passes without a rendered frame, a second client gets the slot; the hostile
    client's status counts its frames as skipped, not dropped."""
    import shutil
    import time
    from types import SimpleNamespace

    import gradio.processing_utils  # noqa: F401 - imported by the first frame out: tens of seconds on a busy CPU

    from talkinghead.demo import Demo, DemoConfig

    path, meta = avatar
    idle = 2.0
    demo = Demo(DemoConfig(ckpt=str(meta.path), runs_dir=tmp_path / "runs", avatars_dir=tmp_path / "runs" / "avatars",
                           evaluate_dir=tmp_path / "runs" / "evaluate", detector=demo_helpers.detector(),
                           temp_base=tmp_path / "tmp", live_backend="torch", live_idle_s=idle))
    try:
        hostile, other = SimpleNamespace(session_hash="hostile"), SimpleNamespace(session_hash="other")
        for req in (hostile, other):
            shutil.copytree(path.parent, demo.session_avatars(req) / "person")
        frames = driver_frames()
        out, status = demo.live_frame(frames[0], "person", request=hostile)
        assert out is not None and "1 rendered" in status, status  # the slot is its
        out, status = demo.live_frame(frames[1], "person", request=other)
        assert out is None and "Another live session is running" in status, status
        tiny = np.zeros((1, 1, 3), np.uint8)
        end = time.monotonic() + 1.5 * idle
        while time.monotonic() < end:
            out, status = demo.live_frame(tiny, "person", request=hostile)
            assert out is not None, "accepted (the last good frame back), skipped, not rendered"
            time.sleep(0.25)
        assert "0 dropped" in status and " skipped" in status and "1 rendered" in status, status
        out, status = demo.live_frame(frames[1], "person", request=other)
        assert out is not None and "frames/s" in status, status
        assert demo.live_lock.holder == "other"
        out, status = demo.live_frame(tiny, "person", request=hostile)
        assert out is None and "Another live session is running" in status, status
    finally:
        demo.close()


def test_pauses_and_skipped_frames_are_not_counted_as_dropped(avatar) -> None:
    from talkinghead.inference.live import LiveSession

    path, meta = avatar
    s = LiveSession.from_file(path, meta, demo_helpers.detector(), DriveOptions(backend="torch"), interval_s=0.04)
    frames = driver_frames()
    tiny = np.zeros((1, 1, 3), np.uint8)
    s.process(frames[0], arrived=0.0)
    for i in range(5):  # a 1×1 frame every 8 s: 1,000 frames' worth of gaps, none of them dropped
        s.process(tiny, arrived=8.0 * (i + 1))
    assert s.stats.dropped == 0 and s.stats.skipped == 5 and s.stats.rendered == 1
    s.process(frames[1], arrived=60.0)  # a pause of 20 s: no drops
    for t in (60.08, 60.12, 60.20):  # a rejected frame between two good ones, then a slot missed
        s.process(tiny if t == 60.08 else frames[2], arrived=t)
    assert s.stats.dropped == 1 and "1 dropped" in s.stats.markdown() and "6 skipped" in s.stats.markdown(), \
        s.stats.markdown()


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
