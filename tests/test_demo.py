"""The demo page's handlers, called over HTTP with gradio_client (as the browser calls them), and its refusals."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
gradio_client = pytest.importorskip("gradio_client")

import demo_helpers  # noqa: E402
from finetune_helpers import tiny_checkpoint  # noqa: E402
from talkinghead.demo import Demo, DemoConfig, DemoError, build_app, checked_upload, launch, safe_child  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny meta-learned run, trained once for this module's servers (each copies it)."""
    run = tmp_path_factory.mktemp("tiny") / "tiny"
    tiny_checkpoint(run)
    return run


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_run):
    root = tmp_path_factory.mktemp("demo")
    shutil.copytree(tiny_run, root / "runs" / "tiny")
    demo = Demo(DemoConfig(runs_dir=root / "runs", avatars_dir=root / "runs" / "avatars",
                           evaluate_dir=root / "runs" / "evaluate", detector=demo_helpers.detector(),
                           temp_base=root / "tmp", default_steps=4, allow_keep=True))
    app = build_app(demo)
    port = demo_helpers.free_port()
    launch(app, demo, port=port, block=False)
    client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
    yield demo, client, root
    app.close()
    demo.close()


def make(client, video=None, photos=None, held="", T=4, mode="FT", steps=4):
    from gradio_client import handle_file

    return client.predict(
        handle_file(str(video)) if video else None,
        [handle_file(str(p)) for p in photos] if photos else None,
        held, T, mode, steps, api_name="/make_avatar",
    )


def drive(client, avatar, video=None, held="", adapt="auto", full=False, backend="auto"):
    from gradio_client import handle_file

    return client.predict(avatar, handle_file(str(video)) if video else None, held, adapt, full, backend,
                          api_name="/drive")


def test_a_video_makes_an_ft_avatar_that_drives(server, tmp_path) -> None:
    import av

    demo, client, root = server
    status, chosen, compare, preview, choice, avatar_file = make(
        client, video=demo_helpers.write_video("person", tmp_path / "p.mp4"))
    assert "saved (FT, T=4, " in status, status
    assert len(chosen) == 4 and [c["caption"] for c in compare[:3]] == ["FF 1", "FT 1", "real 1"]
    assert preview and Path(preview).is_file()
    name = choice["value"]
    saved = list(demo.server.sessions.glob(f"*/avatars/{name}"))
    assert len(saved) == 1 and (saved[0] / "avatar.pt").is_file() and (saved[0] / "samples.png").is_file()
    assert Path(avatar_file).name == "avatar.pt" and Path(avatar_file).read_bytes() == (saved[0] / "avatar.pt").read_bytes()
    assert not (root / "runs" / "avatars").exists(), "nothing goes to runs/avatars unasked"
    kept = client.predict(name, api_name="/keep")
    assert f"Kept on the server as `{name}`" in kept and (root / "runs" / "avatars" / name / "avatar.pt").is_file()
    assert f"`{name}-2`" in client.predict(name, api_name="/keep"), "keeping again makes a new folder"

    status, video, download = drive(client, name, video=demo_helpers.write_video("driver", tmp_path / "d.mp4"))
    assert "frames/s" in status and "**10 frames**" in status, status
    with av.open(video) as c:
        s = c.streams.video[0]
        assert s.codec_context.name in ("h264", "libx264") and (s.width, s.height) == (96, 32)
        assert sum(1 for _ in c.decode(s)) == 10
    assert download and Path(download).is_file()

    status, video, _ = drive(client, name, held=demo.held_out[0], adapt="off")
    assert "raw driver landmarks" in status and video, status


def test_whole_photo_output_and_the_onnx_backend_from_the_pages_export(server, tmp_path) -> None:
    import av

    demo, client, _ = server
    person = demo_helpers.write_video("person", tmp_path / "p.mp4")
    *_, choice, _ = make(client, video=person, mode="FF")
    name = choice["value"]
    status, video, _ = drive(client, name, video=demo_helpers.write_video("driver", tmp_path / "d.mp4"), full=True,
                             backend="torch")
    assert "whole photo" in status and "rendered with torch" in status, status
    with av.open(video) as c:  # the avatar's source frame at its own size, not the 32² crop beside the driver
        s = c.streams.video[0]
        assert (s.width, s.height) == (96, 96)

    status, onnx_file = client.predict(name, api_name="/export")
    assert "Exported" in status and "max |ONNX − PyTorch|" in status, status
    saved = next(demo.server.sessions.glob(f"*/avatars/{name}"))
    assert Path(onnx_file).read_bytes() == (saved / "avatar.onnx").read_bytes()
    assert "exported before" in client.predict(name, api_name="/export")[0], "a second export keeps the file"
    status, video, _ = drive(client, name, held=demo.held_out[0], backend="onnx")
    assert "rendered with onnxruntime" in status and "in memory" not in status and video, status

    other = gradio_client.Client(client.src, verbose=False)  # another browser: this session's avatar is not its own
    with pytest.raises(Exception, match="not in the list of choices"):
        other.predict(name, api_name="/export")
    assert not list(demo.server.sessions.glob(f"*/avatars/{name}/avatar.onnx"))[1:], "one export, the owner's"
    with pytest.raises(Exception, match="not in the list of choices"):  # the page's radio refuses it ...
        drive(client, name, held=demo.held_out[0], backend="tensorrt")
    status, video, _ = demo.drive(name, None, demo.held_out[0], "auto", backend="tensorrt")  # ... and the handler
    assert "backend must be one of torch, onnx, auto, got 'tensorrt'" in status and video is None


def test_photos_make_an_ff_avatar(server, tmp_path) -> None:
    from PIL import Image

    _, client, _ = server
    frames, _ = demo_helpers.render("person")
    photos = []
    for i in (0, 5, 9):
        photos.append(tmp_path / f"me{i}.png")
        Image.fromarray(frames[i]).save(photos[-1])
    status, chosen, compare, *_ = make(client, photos=photos, T=3, mode="FF")
    assert "saved (FF, T=3, 0 fine-tuning steps" in status, status
    assert len(chosen) == 3 and "all 3 frames were used" in status
    assert [c["caption"] for c in compare[:2]] == ["FF 1", "real 1"]


def test_held_out_person_by_id(server) -> None:
    demo, client, _ = server
    status, chosen, *_ = make(client, held=demo.held_out[1], T=2, mode="FF")
    assert "saved (FF, T=2" in status and len(chosen) == 2, status


def test_bad_input_shows_one_line_and_the_server_stays_up(server, tmp_path) -> None:
    demo, client, root = server
    status, chosen, *_ = make(client, photos=[demo_helpers.no_face_photo(tmp_path / "wall.png")], T=1)
    assert status.startswith("**Error:** no usable face in wall.png") and "\n" not in status and chosen == [], status
    assert str(root) not in status, "the page names no server folder"
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    status, *_ = make(client, video=bad)
    assert status.startswith("**Error:** cannot read broken.mp4: not a readable video (") and "'" not in status, status
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    status, *_ = make(client, photos=[demo_helpers.no_face_photo(tmp_path / "ok.png"), text], T=1)
    assert status == "**Error:** notes.png: not a readable image", "the bad one of several photos is named"
    status, *_ = make(client)
    assert status == "**Error:** give 1-32 photos, a video, or pick a held-out person"
    from conftest import write_mp4

    grey = tmp_path / "grey.mp4"
    write_mp4(grey, np.full((6, 64, 64, 3), 120, np.uint8))
    _, _, _, _, choice, _ = make(client, held=demo.held_out[1], T=1, mode="FF")
    status, video, _ = drive(client, choice["value"], video=grey)
    assert status.startswith("**Error:** no usable face") and video is None, status
    status, *_ = make(client, held=demo.held_out[1], T=1, mode="FF")
    assert "saved" in status, "the server must keep working after errors"


def test_a_sessions_end_removes_its_folder_and_cache_copies_and_the_cap_holds(server, monkeypatch, tmp_path) -> None:
    from types import SimpleNamespace

    demo, client, _ = server
    me = gradio_client.Client(client.src, verbose=False)
    monkeypatch.setattr(demo.config, "max_avatars", 2)
    video = demo_helpers.write_video("person", tmp_path / "me.mp4")
    names = []
    for i in range(3):  # previews no other session was sent (Gradio's cache holds one copy per content)
        status, _, _, preview, choice, _ = make(me, video=video, T=i + 1, mode="FF")
        names.append(choice["value"])
    assert "Removed your oldest avatar" in status and [c[1] for c in me.predict(api_name="/avatars")["choices"]] == names[:0:-1]
    folder = demo.server.sessions / me.session_hash
    copies = [p for p in demo.server.gradio.glob("*/preview.mp4") if p.read_bytes() == Path(preview).read_bytes()]
    assert folder.is_dir() and copies
    demo.end_session(SimpleNamespace(session_hash=me.session_hash))  # what the page's unload event calls
    assert not folder.exists() and not any(p.exists() for p in copies)


def test_an_upload_over_the_bounds_is_one_line_saying_which(server, tmp_path, monkeypatch) -> None:
    from PIL import Image

    demo, client, _ = server
    video = demo_helpers.write_video("person", tmp_path / "my clip.mp4")  # 12 frames of 96²
    monkeypatch.setattr(demo.config, "max_video_frames", 10)
    status, *_ = make(client, video=video)
    assert status == ("**Error:** my clip.mp4: 12 frames; the page takes videos of up to 10 frames "
                      "(1 s at its 10 frames/s)"), status
    monkeypatch.setattr(demo.config, "max_megapixels", 0.005)
    status, *_ = make(client, video=video)
    assert status.startswith("**Error:** my clip.mp4: 96×96 pixels a frame; the page takes up to 0.005 megapixels"), status
    Image.fromarray(np.zeros((80, 80, 3), np.uint8)).save(tmp_path / "big.png")
    status, *_ = make(client, photos=[tmp_path / "big.png"], T=1)
    assert status == "**Error:** big.png: 80×80 = 0.0064 Mpx, over the bound of 0.005 Mpx per image", status


def test_names_that_are_paths_are_refused(server, tmp_path) -> None:
    demo, client, root = server
    status, *_ = demo.make_avatar(None, None, demo.held_out[0], 1, "FF", 1)  # the "local" session (no request)
    assert "saved" in status, status
    avatars = demo.session_avatars(None)
    outside = tmp_path / "elsewhere"
    shutil.copytree(avatars / demo.saved_avatars()[0], outside)
    os.symlink(outside, avatars / "linked")
    for name in ("../tiny", "/etc", str(outside), "linked", "a/../../b"):
        status, video, _ = demo.drive(name, None, demo.held_out[0], "auto")
        assert status.startswith("**Error:** refused") and video is None, (name, status)
        try:  # over HTTP: Gradio's own check of the dropdown's choices, or ours
            status, video, _ = drive(client, name, held=demo.held_out[0])
            assert status.startswith("**Error:**") and video is None, (name, status)
        except gradio_client.exceptions.AppError:
            pass
    for held in ("../../etc/passwd", "/etc/passwd", "syn9999/v00"):
        status, *_ = demo.make_avatar(None, None, held, 1, "FF", 1)
        assert status.startswith("**Error:** refused"), status
    with pytest.raises(DemoError, match="refused"):
        safe_child(avatars, "..")


def test_uploads_outside_the_upload_folders_are_refused(tmp_path) -> None:
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    (uploads / "ok.png").write_bytes(b"x")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"x")
    os.symlink(secret, uploads / "link.png")
    assert checked_upload(uploads / "ok.png", [uploads]) == (uploads / "ok.png").resolve()
    for bad in (secret, "/etc/passwd", uploads / ".." / "secret.png", uploads / "link.png", uploads / "none.png"):
        with pytest.raises(DemoError, match="refused"):
            checked_upload(bad, [uploads])


def test_missing_checkpoint_is_one_message_on_the_page(tmp_path) -> None:
    demo = Demo(DemoConfig(runs_dir=tmp_path / "runs", avatars_dir=tmp_path / "av", temp_base=tmp_path / "s"))
    assert demo.meta is None and "no meta-learned checkpoint" in demo.model_error
    build_app(demo)  # the page still builds (and says so in its banner)
    status, *_ = demo.make_avatar(None, None, "syn0001/v00", 1, "FF", 1)
    assert status.startswith("**Error:** no meta-learned checkpoint")
    demo.close() and "\n" not in status
    status, *_ = demo.drive("x", None, "", "auto")
    assert status.startswith("**Error:** no meta-learned checkpoint")
    demo.close()


def test_runs_tab_lists_sample_grids_and_loss_curves(server) -> None:
    from PIL import Image

    demo, client, root = server
    run = root / "runs" / "tiny"
    (run / "samples").mkdir(exist_ok=True)
    for i in (100, 200):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(run / "samples" / f"iter_{i:06d}.png")
    (run / "csv").mkdir(exist_ok=True)
    (run / "csv" / "metrics.csv").write_text("epoch,step,train/loss_g,val/l1\n0,9,1.5,\n0,19,1.2,0.4\n")
    status, grids, curves = client.predict("tiny", api_name="/show_run")
    assert "up to iteration 200" in status, status
    assert [g["caption"] for g in grids][-2:] == ["iteration 100", "iteration 200"]
    assert sorted({r[2] for r in curves["data"]}) == ["train/loss_g", "val/l1"], curves
    status, *_ = demo.show_run("../tiny")
    assert status.startswith("**Error:** refused")


def test_two_users_at_once_wait_their_turn_and_get_their_own_videos(server, tmp_path, monkeypatch) -> None:
    """Two browser sessions each make an avatar and drive it, at the same moment: Gradio's queue runs one job at
    a time, each session gets its own clip (the frame count it asked for) in its own folder, and nothing fails."""
    import threading
    import time as time_

    import av
    from conftest import write_mp4
    from talkinghead import api

    demo, client, root = server
    spans: list[tuple[float, float]] = []

    def timed(fn):
        def wrapper(*args, **kwargs):
            t0 = time_.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spans.append((t0, time_.perf_counter()))
        return wrapper

    monkeypatch.setattr(api, "drive", timed(api.drive))
    monkeypatch.setattr(api, "make_avatar", timed(api.make_avatar))
    frames, _ = demo_helpers.render("driver")
    clips = {10: tmp_path / "long.mp4", 6: tmp_path / "short.mp4"}
    write_mp4(clips[10], frames)
    write_mp4(clips[6], frames[:6])
    results: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def user(n: int) -> None:
        try:
            me = gradio_client.Client(client.src, verbose=False)  # a browser session of its own
            status, _, _, _, choice, _ = make(me, held=demo.held_out[n % 2], T=1, mode="FF")
            assert "saved" in status, status
            results[n] = drive(me, choice["value"], video=clips[n])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=user, args=(n,)) for n in clips]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and len(results) == 2, errors
    folders = set()
    for n, (status, video, _) in results.items():
        assert f"**{n} frames**" in status, status
        with av.open(video) as c:
            assert sum(1 for _ in c.decode(video=0)) == n, "each user gets the clip of the video they sent"
        served = [p for p in demo.server.sessions.glob("*/driven_*.mp4") if p.name == Path(video).name]
        assert len(served) == 1, served
        folders.add(served[0].parent)
    assert len(folders) == 2, "each session writes in its own folder"
    spans.sort()
    assert len(spans) == 4 and all(a[1] <= b[0] for a, b in zip(spans, spans[1:])), "one job at a time"


# ------------------------------------------------------------------------------------------------ a real server
#: the page's stated peak memory per job (docs/demo.md): the server's peak RSS above its level after a first
#: small job, while making an avatar from and driving with a 2048² 400-frame video (300 frames decoded, scaled
#: down while decoding to 512 px a side for this 32² model: 300 x 512² x 3 B = 236 MB of frames)
PEAK_JOB_MB = 700


def _kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_run):
    """``talkinghead demo`` in a process of its own (cwd: a folder with runs/, TMPDIR inside it), as served."""
    import subprocess
    import sys
    import time as time_

    if not Path("/proc/self/status").is_file():
        pytest.skip("needs /proc to measure the server's memory")
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(tiny_run, root / "runs" / "tiny")
    ckpt = root / "runs" / "tiny" / "checkpoints" / "last.ckpt"
    wandb = root / "runs" / "tiny" / "wandb" / "offline-run-1"
    wandb.mkdir(parents=True)
    (wandb / "run-1.wandb").write_bytes(b"w&b data")
    (wandb / "debug.log").write_text("secret log")
    (root / "tmp").mkdir()
    port = demo_helpers.free_port()
    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TMPDIR=str(root / "tmp"),
               PYTHONPATH=os.pathsep.join([str(repo / "src"), str(repo), str(repo / "tests")]))
    env.pop("GRADIO_TEMP_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "talkinghead.cli", "demo", "--ckpt", "runs/tiny/checkpoints/last.ckpt",
         "--runs-dir", "runs", "--port", str(port), "--detector", "demo_helpers:static_detector", "--steps", "2",
         "--allow-keep"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    end = time_.time() + 180
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the demo exited with {proc.returncode}: {proc.stdout.read()[-3000:]}")
        try:
            client = gradio_client.Client(url, verbose=False)
            break
        except Exception:  # noqa: BLE001 - not up yet
            if time_.time() > end:
                proc.kill()
                raise
            time_.sleep(1)
    yield proc, url, client, root, ckpt
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_large_video_stays_under_the_stated_peak_memory(served, tmp_path) -> None:
    proc, url, client, root, _ = served
    big = demo_helpers.write_large_video(tmp_path / "big.mp4")
    assert big.stat().st_size < 2**20, "a small upload"
    status, _, _, _, choice, _ = make(client, held="syn0004/v00", T=1, mode="FF")  # a first job: imports, buffers
    assert "saved" in status, status
    status, *_ = drive(client, choice["value"], held="syn0005/v00")
    assert "frames/s" in status, status
    base = _kib(proc.pid, "VmHWM")
    status, chosen, _, _, choice, _ = make(client, video=big, T=2, mode="FF")
    assert "saved (FF, T=2" in status and "400 frames: 300 of them" in status, status
    status, video, _ = drive(client, choice["value"], video=big)
    assert "**300 frames**" in status, status
    peak = _kib(proc.pid, "VmHWM")
    print(f"server peak RSS {peak / 1024:.0f} MB, {(peak - base) / 1024:.0f} MB above its level after a small job")
    assert (peak - base) / 1024 < PEAK_JOB_MB, f"{(peak - base) / 1024:.0f} MB for one job"


def test_a_video_that_lies_about_its_frame_size_is_one_line_and_decodes_nothing_big(served, tmp_path) -> None:
    """Its stream header and first frames say 64², its last frame is a 12000² PNG (432 MB as RGB, 0.4 MB sent)."""
    from test_decode import lying_video

    proc, url, client, root, _ = served
    plain = lying_video(tmp_path / "plain.avi", 64)
    status, *_ = make(client, video=plain, T=32, mode="FF")  # the same upload, decoding and detection: small
    assert "T=32 needs 32 frames" in status, status
    base = _kib(proc.pid, "VmHWM")
    status, *_ = make(client, video=lying_video(tmp_path / "lying.avi", 12000), T=2, mode="FF")
    assert status == ("**Error:** lying.avi: frame 4 is 12000×12000 = 144 Mpx, over the bound of 16.8 Mpx per "
                      "frame"), status
    rise = (_kib(proc.pid, "VmHWM") - base) / 1024
    print(f"server peak RSS rise for the lying video: {rise:.0f} MB")
    assert rise < 40, f"{rise:.0f} MB"


def test_files_are_served_only_to_the_session_that_made_them(served, tmp_path) -> None:
    import httpx

    proc, url, a, root, ckpt = served
    b = gradio_client.Client(url, verbose=False)
    status, _, _, preview, choice, _ = make(a, video=demo_helpers.write_video("person", tmp_path / "mine.mp4"),
                                            T=2, mode="FF")
    name = choice["value"]
    assert "saved" in status, status
    assert "Kept on the server" in a.predict(name, api_name="/keep")
    _, _, _, _, theirs, _ = make(b, held="syn0004/v01", T=1, mode="FF")
    assert name not in [c[1] for c in theirs["choices"]] and theirs["value"] not in [c[1] for c in a.predict(api_name="/avatars")["choices"]], \
        "a session never sees another's avatar names"

    servers = list((root / "tmp").glob("talkinghead-demo-*"))
    assert len(servers) == 1
    made = list(servers[0].glob(f"sessions/*/avatars/{name}"))
    assert len(made) == 1
    secrets = [ckpt, root / "runs" / "tiny" / "wandb" / "offline-run-1" / "run-1.wandb",
               root / "runs" / "tiny" / "wandb" / "offline-run-1" / "debug.log",
               root / "runs" / "avatars" / name / "avatar.pt",
               made[0] / "avatar.pt", made[0] / "samples.png", made[0] / "preview.mp4"]
    with httpx.Client(base_url=url, timeout=30) as web:
        for path in secrets:
            assert path.is_file(), path
            for ref in (str(path), str(path.relative_to(root))):
                r = web.get(f"/gradio_api/file={ref}")
                assert r.status_code in (403, 404) and r.content != path.read_bytes(), (ref, r.status_code)
        cached = [p for p in servers[0].glob("gradio/*/preview.mp4") if p.read_bytes() == Path(preview).read_bytes()]
        assert cached, "the preview a session was sent is in Gradio's cache"
        r = web.get(f"/gradio_api/file={cached[0]}")
        assert r.status_code == 200 and r.content == Path(preview).read_bytes(), "its own output is served"


def test_sigterm_removes_the_servers_folder(served) -> None:
    import signal

    proc, _, _, root, _ = served
    servers = list((root / "tmp").glob("talkinghead-demo-*"))
    assert len(servers) == 1 and list(servers[0].glob("sessions/*")) and list(servers[0].glob("gradio/*"))
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    assert not servers[0].exists(), "the session folders and Gradio's cache go with the server"
    assert (root / "runs" / "avatars").is_dir(), "what was kept stays"


def test_a_restart_removes_a_crashed_servers_folder_and_nothing_else(tmp_path) -> None:
    import signal
    import subprocess
    import sys

    from talkinghead.sessions import MARK, ServerFolder, _start_time

    base = tmp_path / "tmp"
    repo = Path(__file__).resolve().parents[1]
    crashed = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from talkinghead.sessions import ServerFolder; "
         "f = ServerFolder(sys.argv[1]); (f.sessions / 'x').mkdir(); print(f.root, flush=True); time.sleep(60)",
         str(base)],
        env=dict(os.environ, PYTHONPATH=str(repo / "src")), stdout=subprocess.PIPE, text=True,
    )
    left = Path(crashed.stdout.readline().strip())
    crashed.send_signal(signal.SIGKILL)
    crashed.wait()
    running = subprocess.Popen(["sleep", "60"])
    try:
        alive = base / "talkinghead-demo-alive"
        alive.mkdir()
        (alive / MARK).write_text(f"{running.pid} {_start_time(running.pid)}\n")
        unmarked = base / "talkinghead-demo-not-ours"
        unmarked.mkdir()
        assert left.is_dir() and (left / MARK).is_file()
        server = ServerFolder(base)
        assert server.removed_leftovers == [left] and not left.exists()
        assert alive.is_dir() and unmarked.is_dir(), "a running server's folder and unmarked ones are kept"
        server.remove()
    finally:
        running.kill()
        running.wait()
