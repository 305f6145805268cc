"""Shards on remote storage: a local HTTP server (a thread on 127.0.0.1) serves voxmini's shards; training streams
them, fine-tuning and evaluation fetch a test person's shard into the local cache; bad input is one clear line."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from data_modules.remote import RemoteError, ShardError, fetch_shard, is_remote, join
from data_modules.shards import MANIFEST, iter_shard, load_manifest
from data_modules.voxceleb import VoxCeleb2DataModule

pytestmark = pytest.mark.voxmini


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: ANN002
        pass


@pytest.fixture()
def serve(tmp_path):
    """``serve(folder) -> "http://127.0.0.1:PORT/"``: a threaded HTTP server on that folder for the test."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture()
def served(tmp_path, voxmini_shards):
    """A copy of voxmini's shards to serve (tests may break it)."""
    src, _ = voxmini_shards
    dst = tmp_path / "served"
    shutil.copytree(src, dst)
    return dst


def test_urls_are_told_from_paths():
    assert is_remote("http://h/x") and is_remote("https://h/x/") and is_remote("s3://b/x") and is_remote("pipe:cat {}")
    assert not is_remote("/data/x") and not is_remote("file:///data/x") and not is_remote("relative/dir")
    assert join("http://h/x/", "manifest.json") == "http://h/x/manifest.json"
    assert join("pipe:cat /d/{}", "shard-000001.tar") == "pipe:cat /d/shard-000001.tar"
    with pytest.raises(RemoteError, match=r"needs \{\}"):
        join("pipe:cat /d/", "manifest.json")


def test_the_stream_over_http_and_pipe_equals_the_local_one(served, serve):
    url = serve(served)
    local = load_manifest(served)
    for root in (url, f"pipe:cat {served}/{{}}"):
        m = load_manifest(root)
        assert m.remote and [v.video_id for v in m.videos] == [v.video_id for v in local.videos]
        shard = m.shards[1]
        a = [(s.key, s.frames, s.landmarks.tobytes()) for s in iter_shard(m.locate(shard))]
        b = [(s.key, s.frames, s.landmarks.tobytes()) for s in iter_shard(served / shard)]
        assert a == b and len(a) > 0


def test_meta_learning_finetune_and_evaluate_from_an_http_root(served, serve, tmp_path, monkeypatch, capsys):
    from finetune_helpers import QUIET, TINY_MODEL

    from talkinghead.config import compose
    from talkinghead.evaluation.evaluate import evaluate_main
    from talkinghead.cli import finetune_main
    from talkinghead.training.train import build_meta_learning

    url = serve(served)
    monkeypatch.setenv("TALKINGHEAD_CACHE", str(tmp_path / "cache"))
    data = ["data=vox2", f"data.root={url}", "data.num_workers=2", "data.batch_size=2", "data.test_fraction=0.2",
            "data.max_val_videos=2", "~data.augment", "model.landmarks=ibug68"]  # the shards hold 68 points
    cfg = compose("meta_learn", [*QUIET, *TINY_MODEL, *data, "K=2", "iterations=3", f"run_dir={tmp_path / 'run'}",
                                 "trainer=cpu"])
    run = build_meta_learning(cfg)
    run.trainer.num_sanity_val_steps = 0
    run.fit()
    assert run.module.iteration == 3, "training steps ran on shards streamed over HTTP"
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    test_person = run.datamodule.test_persons[0]

    out = finetune_main([f"ckpt={ckpt}", f"id={test_person}", "T=2", "mode=FT", "steps=2", "epochs=null",
                         f"out_dir={tmp_path / 'av'}", "~logger", "progress=false"])
    assert Path(out).is_file()
    cached = list((tmp_path / "cache" / "shards").rglob("shard-*.tar"))
    assert cached and all(p.stat().st_size == (served / p.name).stat().st_size for p in cached)
    assert str(tmp_path / "cache") in capsys.readouterr().err, "the cache says where it is"

    table = evaluate_main([f"ckpt={ckpt}", "T_values=[1]", "num_targets=2", "finetune.steps=1",
                           "finetune.epochs=null", "max_videos=1", f"out_dir={tmp_path / 'eval'}", "logger=csv",
                           "progress=false"])
    assert Path(table).is_file() and "1,FT,1," in Path(table).read_text()


def test_unreachable_root_is_one_clear_line(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(RemoteError) as info:
        VoxCeleb2DataModule(f"http://127.0.0.1:{port}/vox2/", K=2, image_size=32, num_workers=0)
    msg = str(info.value)
    assert f"http://127.0.0.1:{port}/vox2/manifest.json" in msg and "\n" not in msg


def _train_stream(url: str, workers: int) -> list:
    dm = VoxCeleb2DataModule(url, K=2, image_size=32, batch_size=2, num_workers=workers, augment=None,
                             test_fraction=0.2)
    return [b["video_id"] for b in dm.train_dataloader()]


def test_a_404_shard_names_the_shard_and_loses_nothing(served, serve, tmp_path, monkeypatch):
    url = serve(served)
    gone = load_manifest(served).shards[2]
    (served / gone).rename(tmp_path / gone)  # the server no longer has it
    with pytest.raises(RemoteError) as info:
        _train_stream(url, workers=2)
    msg = str(info.value)
    assert f"{url}{gone}" in msg and "404" in msg and "\n" not in msg
    monkeypatch.setenv("TALKINGHEAD_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RemoteError, match="404"):
        fetch_shard(url, gone)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()], "no partial file in the cache"


def test_a_truncated_remote_shard_names_the_shard(served, serve, tmp_path, monkeypatch):
    url = serve(served)
    bad = load_manifest(served).shards[1]
    data = (served / bad).read_bytes()
    (served / bad).write_bytes(data[: len(data) // 2 + 700])  # cut inside a member
    with pytest.raises(ShardError) as info:
        _train_stream(url, workers=0)
    assert f"{url}{bad}" in str(info.value) and "truncated" in str(info.value)
    monkeypatch.setenv("TALKINGHEAD_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RemoteError, match=f"{bad} is truncated"):
        fetch_shard(url, bad)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()], "no partial file in the cache"
    # cut exactly between two videos: the tar still parses, but the stream knows how many videos it holds
    import tarfile

    with tarfile.open(served / load_manifest(served).shards[0]) as tar:
        members = tar.getmembers()
    first_key = members[0].name.split(".")[0]
    cut = next(m.offset for m in members if not m.name.startswith(first_key + "."))
    full = (served / load_manifest(served).shards[0]).read_bytes()
    (served / load_manifest(served).shards[0]).write_bytes(full[:cut])
    (served / bad).write_bytes(data)
    with pytest.raises(ShardError, match=r"ended after \d+ of its"):
        _train_stream(url, workers=0)


@pytest.mark.slow
def test_training_from_an_http_root_that_drops_halfway_names_the_shard_and_resumes(served, tmp_path):
    """The server cuts one shard short mid-run: training stops with that shard named in one line; once the shard
    is whole again the same command resumes from the last checkpoint and finishes."""
    from finetune_helpers import QUIET, TINY_MODEL

    from talkinghead.config import compose
    from talkinghead.training.train import build_meta_learning

    broken: set[str] = set()

    class Flaky(_Quiet):
        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            if name not in broken:
                return super().do_GET()
            data = (served / name).read_bytes()[:5000]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Flaky, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        overrides = [*QUIET, *TINY_MODEL, "data=vox2", f"data.root={url}", "data.num_workers=2",
                     "model.landmarks=ibug68",  # the shards hold 68 points
                     "data.batch_size=2", "data.test_fraction=0.2", "data.max_val_videos=1", "~data.augment", "K=2",
                     "iterations=22", "callbacks.ckpt_every_n_iterations=4", f"run_dir={tmp_path / 'run'}",
                     "trainer=cpu"]
        run = build_meta_learning(compose("meta_learn", overrides))
        run.trainer.num_sanity_val_steps = 0
        shard = load_manifest(served).shards[-1]

        class DropAt(__import__("pytorch_lightning").Callback):
            def on_train_batch_end(self, trainer, pl_module, *args) -> None:  # noqa: ANN001, ANN002
                if pl_module.iteration == 5:
                    broken.add(shard)  # from the next epoch's read of it on, the server cuts it short

        run.trainer.callbacks.append(DropAt())
        with pytest.raises(RemoteError) as info:
            run.fit()
        msg = str(info.value)
        assert f"{url}{shard}" in msg and "\n" not in msg, msg
        assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file(), "nothing lost"
        broken.clear()
        again = build_meta_learning(compose("meta_learn", overrides))
        assert again.ckpt_path is not None
        again.trainer.num_sanity_val_steps = 0
        again.fit()
        assert again.module.iteration == 22
    finally:
        server.shutdown()
        server.server_close()
