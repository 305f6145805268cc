"""The demo server under hostile use, from second clients on 127.0.0.1 (gradio_client and plain HTTP): sessions
that never come back end after the idle time, the session and disk caps refuse with one line, uploads no job
uses are swept, the upload route is bounded, a failed job's upload goes at once, "keep" is off unless asked.

The server has no checkpoint (no model to train: a job fails after its session is admitted, as a job with bad
input would), and its times are shortened: sessions idle 1.5 s, unused uploads 1 s where a test says so."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("gradio", reason="the demo extra is not installed (pip install -e '.[demo]')")
gradio_client = pytest.importorskip("gradio_client")
httpx = pytest.importorskip("httpx")

import demo_helpers  # noqa: E402
from talkinghead.demo import KEEP_OFF, MAX_UPLOAD_FILES, Demo, DemoConfig, build_app, launch  # noqa: E402
from talkinghead.sessions import folder_bytes  # noqa: E402

IDLE_S = 1.5
MAX_SESSIONS = 3
MB = 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("limits")
    demo = Demo(DemoConfig(runs_dir=root / "runs", avatars_dir=root / "runs" / "avatars",
                           evaluate_dir=root / "runs" / "evaluate", temp_base=root / "tmp", detector="auto",
                           session_idle_s=IDLE_S, max_sessions=MAX_SESSIONS, upload_idle_s=600, max_file_mb=2))
    app = build_app(demo)
    port = demo_helpers.free_port()
    launch(app, demo, port=port, block=False)
    yield demo, f"http://127.0.0.1:{port}/"
    app.close()
    demo.close()


@pytest.fixture
def demo(server, monkeypatch):
    """The server with no session left over from another test, its limits restored after."""
    demo, _ = server
    for d in list(demo.server.sessions.iterdir()):
        demo.server.end_session(d.name)
    for field in ("idle_s", "upload_idle_s", "max_disk_mb", "max_sessions"):
        monkeypatch.setattr(demo.server.limits, field, getattr(demo.server.limits, field))
    return demo


def join(url: str, video: Path | None = None) -> tuple[gradio_client.Client, str]:
    """A client that makes one job (which fails: no model) and goes away without a heartbeat: (it, the status)."""
    from gradio_client import handle_file

    client = gradio_client.Client(url, verbose=False)
    status, *_ = client.predict(handle_file(str(video)) if video else None, None, "", 1, "FF", 1,
                                api_name="/make_avatar")
    return client, status


def wait_for(check, timeout: float = 15.0) -> bool:
    end = time.time() + timeout
    while time.time() < end:
        if check():
            return True
        time.sleep(0.1)
    return check()


def post(url: str, files: list[tuple[str, bytes]]) -> httpx.Response:
    """One POST to Gradio's upload route, as a plain HTTP client sends it."""
    return httpx.post(url + "gradio_api/upload", files=[("files", f) for f in files], timeout=30)


def test_sessions_that_never_come_back_end_and_the_cap_refuses_one_more(server, demo) -> None:
    _, url = server
    demo.server.limits.idle_s = 120  # while the clients join (seconds each on a busy CPU)
    clients = []
    for _ in range(MAX_SESSIONS):
        client, status = join(url)
        assert status.startswith("**Error:** no meta-learned checkpoint"), status
        clients.append(client)
    folders = [demo.server.sessions / c.session_hash for c in clients]
    assert all(f.is_dir() for f in folders) and demo.server.count() == MAX_SESSIONS
    _, status = join(url)
    assert status == (f"**Error:** the server is full: {MAX_SESSIONS} sessions at once, its limit; try again in a "
                      "few minutes"), status
    assert demo.server.count() == MAX_SESSIONS, "the refused session has no folder"
    demo.server.limits.idle_s = IDLE_S
    t0 = time.time()
    assert wait_for(lambda: demo.server.count() == 0), [d.name for d in demo.server.sessions.iterdir()]
    assert not any(f.exists() for f in folders)
    _, status = join(url)
    assert status.startswith("**Error:** no meta-learned checkpoint"), "room again once the idle sessions went"


def test_an_open_page_keeps_its_session(server, demo) -> None:
    from types import SimpleNamespace

    _, url = server
    demo.server.limits.idle_s = 120
    client, _ = join(url)
    folder = demo.server.sessions / client.session_hash
    demo.ping(SimpleNamespace(session_hash=client.session_hash))
    demo.server.limits.idle_s = IDLE_S
    for _ in range(4):  # the page's timer pings more often than the idle time
        time.sleep(IDLE_S / 2)
        demo.ping(SimpleNamespace(session_hash=client.session_hash))
        assert folder.is_dir()
    assert wait_for(lambda: not folder.exists()), "and it ends once the pings stop"


def test_uploads_no_job_uses_are_swept_and_the_route_is_bounded(server, demo) -> None:
    _, url = server
    gradio = demo.server.gradio
    before = folder_bytes(gradio)
    for i in range(5):
        r = post(url, [(f"junk{i}.png", bytes([i]) * MB)])
        assert r.status_code == 200, r.text
    assert folder_bytes(gradio) - before >= 5 * MB, "the five posts are on disk"
    r = post(url, [(f"many{i}.png", bytes([i])) for i in range(MAX_UPLOAD_FILES + 1)])
    assert r.status_code == 400 and r.text == f"Too many files. Maximum number of files is {MAX_UPLOAD_FILES}.", r.text
    assert not any(gradio.rglob("many*")), "nothing of the refused post stays"
    r = post(url, [("big.png", b"x" * (3 * MB))])
    assert r.status_code == 413 and not any(gradio.rglob("big.png")), r.text
    demo.server.limits.upload_idle_s = 1.0
    assert wait_for(lambda: folder_bytes(gradio) - before < MB), folder_bytes(gradio) - before
    assert not any(gradio.rglob("junk*"))


def test_the_disk_cap_refuses_uploads_and_new_sessions(server, demo) -> None:
    _, url = server
    demo.server.limits.max_disk_mb = demo.server.usage_mb() + 2.5
    for i in range(3):
        r = post(url, [(f"fill{i}.png", bytes([i + 10]) * MB)])
        assert r.status_code == 200, r.text
    r = post(url, [("more.png", b"m" * MB)])
    assert r.status_code == 400 and r.text.startswith("the server is full: its sessions hold "), r.text
    assert not any(demo.server.gradio.rglob("more.png"))
    _, status = join(url)
    assert status.startswith("**Error:** the server is full: its sessions hold ") and "\n" not in status, status
    demo.server.limits.upload_idle_s = 1.0
    assert wait_for(lambda: post(url, [("later.png", b"l")]).status_code == 200), "room again once swept"


def test_a_failed_jobs_upload_goes_at_once(server, demo, tmp_path) -> None:
    _, url = server
    video = demo_helpers.write_video("person", tmp_path / "mine.mp4")
    client, status = join(url, video)
    assert status.startswith("**Error:** no meta-learned checkpoint"), status
    assert not any(demo.server.gradio.rglob("mine.mp4")), "its cache copy"
    assert not any((demo.server.sessions / client.session_hash).rglob("mine.mp4")), "its session's copy"


def test_keep_is_off_unless_the_operator_turns_it_on(server, demo) -> None:
    _, url = server
    client = gradio_client.Client(url, verbose=False)
    status = client.predict(None, api_name="/keep")
    assert status == f"**Error:** {KEEP_OFF}" and "\n" not in status, status
    assert not (demo.avatars_dir).exists(), "nothing written"
