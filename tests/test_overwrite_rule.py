"""Promises kept under hostile use: yes/no values read one way (Makefile and configs), one overwrite rule for every
file a command writes (talkinghead.outputs), and honest stops (SIGTERM/Ctrl-C: non-zero status, one line)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune_helpers import tiny_checkpoint
from talkinghead import api, cli
from talkinghead.config import as_flag, compose
from talkinghead.errors import ConfigError
from talkinghead.outputs import OutputError, check_outputs, remove_stale_partials

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]), OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("rule") / "tiny")


def make_n(*args: str) -> subprocess.CompletedProcess:
    """``make -n`` (print the command, run nothing) of the checkout's Makefile."""
    return subprocess.run(["make", "-s", "-n", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def one_line_error(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ------------------------------------------------------------------------------------------ yes/no values
@pytest.mark.parametrize("value", ["0", "no", "false", "off", "OFF", "False", ""])
def test_make_reads_no_as_no(value) -> None:
    proc = make_n("reenact", "AVATAR=a.pt", "DRIVER=d.mp4", f"OVERWRITE={value}", f"SIDE={value}", f"FULL={value}")
    assert proc.returncode == 0, proc.stderr
    assert "--overwrite" not in proc.stdout and "--side-by-side" not in proc.stdout and "--full" not in proc.stdout
    proc = make_n("finetune", "ID=x", f"OVERWRITE={value}")
    assert proc.returncode == 0 and "overwrite" not in proc.stdout, proc.stdout
    proc = make_n("export", "AVATAR=a.pt", f"OVERWRITE={value}")
    assert proc.returncode == 0 and "--overwrite" not in proc.stdout, proc.stdout


@pytest.mark.parametrize("value", ["1", "yes", "true", "on", "YES", "True"])
def test_make_reads_yes_as_yes(value) -> None:
    proc = make_n("reenact", "AVATAR=a.pt", "DRIVER=d.mp4", f"OVERWRITE={value}", f"SIDE={value}")
    assert "--overwrite" in proc.stdout and "--side-by-side" in proc.stdout, proc.stdout + proc.stderr
    assert "overwrite=true" in make_n("finetune", "ID=x", f"OVERWRITE={value}").stdout
    assert "--quick" in make_n("bench", f"QUICK={value}").stdout
    assert "--smooth on" in make_n("reenact", "AVATAR=a", "DRIVER=d", f"SMOOTH={value}").stdout


def test_make_side_0_full_0_turns_neither_on_and_smooth_off_is_off() -> None:
    proc = make_n("reenact", "AVATAR=a.pt", "DRIVER=d.mp4", "SIDE=0", "FULL=0", "SMOOTH=off")
    assert proc.returncode == 0 and "--side-by-side" not in proc.stdout and "--full" not in proc.stdout
    assert "--smooth off" in proc.stdout


@pytest.mark.parametrize("target, var", [("finetune", "OVERWRITE"), ("reenact", "SIDE"), ("reenact", "FULL"),
                                         ("export", "OVERWRITE"), ("sanity", "BLIND"), ("gpu-check", "CPU")])
@pytest.mark.parametrize("value", ["maybe", "2", "1 0"])
def test_make_refuses_any_other_value_in_one_line(target, var, value) -> None:
    proc = make_n(target, "ID=x", "AVATAR=a.pt", "DRIVER=d.mp4", f"{var}={value}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and not proc.stdout.strip(), proc.stderr
    assert f"{var}={value} is not yes or no: give 1/yes/true/on or 0/no/false/off" in lines[0]


def test_the_configs_yes_no_keys_read_the_same_words() -> None:
    assert [as_flag(v, "k") for v in (True, 1, "1", "yes", "On", "TRUE")] == [True] * 6
    assert [as_flag(v, "k") for v in (False, 0, "0", "no", "Off", "false", "", None)] == [False] * 8
    for bad in ("maybe", 2, "yes please", 0.5):
        with pytest.raises(ConfigError, match=r"^k must be yes or no \(1/yes/true/on or 0/no/false/off\), got"):
            as_flag(bad, "k")
    assert compose("finetune", ["id=x", "overwrite=0"]).overwrite is False
    assert compose("finetune", ["id=x", "overwrite=no"]).overwrite is False  # bool("no") was True
    assert compose("finetune", ["id=x", "overwrite=yes", "progress=off"]).progress is False
    assert compose("evaluate", ["cross.full=on"]).cross.full is True


def test_a_cli_overwrite_of_any_other_word_is_one_line(capsys, tmp_path) -> None:
    msg = one_line_error(capsys, ["finetune", "id=syn0004/v00", "overwrite=maybe", f"out_dir={tmp_path}"])
    assert msg == "error: overwrite must be yes or no (1/yes/true/on or 0/no/false/off), got 'maybe'"
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ the overwrite rule
def test_check_outputs_refuses_inputs_always_and_existing_files_unless_asked(tmp_path) -> None:
    video, photos = tmp_path / "v.mp4", tmp_path / "photos"
    video.write_bytes(b"v")
    photos.mkdir()
    (photos / "a.jpg").write_bytes(b"a")
    with pytest.raises(OutputError, match=r"is the driver itself: give another OUT \(the driver is kept\)"):
        check_outputs([video], {"driver": video}, overwrite=True, label="OUT")
    with pytest.raises(OutputError, match="would be written into the source folder"):
        check_outputs([photos / "samples.png"], {"source": photos}, overwrite=True)
    with pytest.raises(OutputError, match="is the photo itself"):
        check_outputs([tmp_path / "x" / ".." / "photos" / "a.jpg"], {"photo": [photos / "a.jpg"]}, overwrite=True)
    with pytest.raises(OutputError, match=r"exists: give another out=, or overwrite=true \(make: OVERWRITE=1"):
        check_outputs([tmp_path / "new.pt", video], {"checkpoint": None}, label="out=")
    assert check_outputs([video], {"id": "syn0004/v00"}, overwrite=True) == [video]
    assert video.read_bytes() == b"v" and (photos / "a.jpg").read_bytes() == b"a"


def test_a_stale_partial_of_a_dead_writer_is_removed_a_live_ones_kept(tmp_path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.partial-{int(dead.stdout)}.mp4"
    live = tmp_path / f".out.partial-{os.getppid()}.mp4"
    other = tmp_path / f".other.partial-{int(dead.stdout)}.mp4"
    for f in (stale, live, other):
        f.write_bytes(b"half")
    assert remove_stale_partials(tmp_path / "out.mp4") == [stale]
    assert not stale.exists() and live.exists() and other.exists()


def finetune_argv(ckpt: Path, *extra: str) -> list[str]:
    return ["finetune", f"ckpt={ckpt}", "id=syn0004/v00", "T=1", "mode=FF", "~logger", "progress=false",
            "preview_frames=2", *extra]


def test_an_explicit_out_never_replaces_its_neighbours(ckpt, tmp_path, capsys) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "samples.png").write_bytes(b"someone else's samples")
    msg = one_line_error(capsys, finetune_argv(ckpt, f"out={folder / 'second.pt'}"))
    assert msg.startswith(f"error: {folder / 'samples.png'} exists: give another out=, or overwrite=true"), msg
    assert sorted(p.name for p in folder.iterdir()) == ["samples.png"]
    assert (folder / "samples.png").read_bytes() == b"someone else's samples"
    (folder / "samples.png").unlink()
    (folder / "preview.mp4").write_bytes(b"someone else's preview")
    assert "preview.mp4 exists" in one_line_error(capsys, finetune_argv(ckpt, f"out={folder / 'second.pt'}"))
    assert (folder / "preview.mp4").read_bytes() == b"someone else's preview"
    assert cli.main(finetune_argv(ckpt, f"out={folder / 'second.pt'}", "overwrite=yes")) == 0  # asked: replaced
    assert (folder / "second.pt").is_file() and (folder / "preview.mp4").read_bytes() != b"someone else's preview"


def test_finetune_never_writes_over_the_checkpoint_it_reads(ckpt, tmp_path, capsys) -> None:
    before = ckpt.read_bytes()
    for extra in ([], ["overwrite=true"]):
        msg = one_line_error(capsys, finetune_argv(ckpt, f"out={ckpt}", *extra))
        assert msg == f"error: out= {ckpt} is the checkpoint itself: give another out= (the checkpoint is kept)"
    # nor beside it over a file of the run (samples.png of another avatar is no input, but exists)
    assert ckpt.read_bytes() == before and sorted(p.name for p in ckpt.parent.iterdir()) == ["last.ckpt"]
    with pytest.raises(OutputError, match="is the checkpoint itself"):
        api.make_avatar("syn0004/v00", T=1, mode="FF", ckpt=ckpt, out=ckpt, overwrite=True)


def test_drive_and_export_follow_the_same_rule(ckpt, tmp_path) -> None:
    avatar = api.make_avatar("syn0004/v00", T=1, mode="FF", ckpt=ckpt, out=tmp_path / "a" / "avatar.pt",
                             preview_frames=2).path
    out = tmp_path / "o.mp4"
    out.write_bytes(b"earlier video")
    with pytest.raises(OutputError, match=r"o.mp4 exists: give another OUT, or overwrite=true"):
        api.drive(avatar, "syn0005/v01", out, synthetic_frames=3)
    assert out.read_bytes() == b"earlier video"
    assert api.drive(avatar, "syn0005/v01", out, synthetic_frames=3, overwrite=True).path == out
    onnx = tmp_path / "a" / "avatar.onnx"
    onnx.write_bytes(b"earlier export")
    with pytest.raises(OutputError, match="avatar.onnx exists"):
        api.export_avatar(avatar)
    assert onnx.read_bytes() == b"earlier export"


def test_the_reenact_hint_is_quoted_for_the_shell(ckpt, tmp_path, capsys) -> None:
    out_dir = tmp_path / "my avatars"
    assert cli.main(finetune_argv(ckpt, f"out_dir={out_dir}")) == 0
    hint = [line for line in capsys.readouterr().out.splitlines() if "make reenact" in line]
    assert hint == [f"  reenact: make reenact AVATAR='{out_dir}/syn0004_v00_T1_FF/avatar.pt' DRIVER=<video or id> "
                    "OUT=out.mp4"], hint


# ------------------------------------------------------------------------------------------ honest stops
def _stop_finetune(ckpt: Path, tmp_path: Path, signum: int) -> tuple[int, list[str], Path]:
    """Start ``python -m talkinghead.cli finetune`` (FT, many steps), send ``signum`` once it is fine-tuning (its
    CSV log folder exists); returns (status, stderr lines, the avatar folder)."""
    out_dir = tmp_path / "avatars"
    folder = out_dir / "syn0004_v00_T1_FT"
    err = tmp_path / "stderr.txt"
    with open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "talkinghead.cli", "finetune", f"ckpt={ckpt}", "id=syn0004/v00", "T=1",
             "mode=FT", "steps=100000", "early_stop_window=0", "logger=csv", "progress=false", f"out_dir={out_dir}"],
            cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=stderr,
        )
        try:
            deadline = time.time() + 240
            while not (folder / "csv").exists() and proc.poll() is None and time.time() < deadline:
                time.sleep(0.2)
            assert proc.poll() is None and (folder / "csv").exists(), err.read_text()
            time.sleep(1.0)  # well inside trainer.fit
            proc.send_signal(signum)
            status = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return status, [line for line in err.read_text().splitlines() if line.strip()], folder


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_finetune_exits_non_zero_and_says_what_was_kept(ckpt, tmp_path, signum, status) -> None:
    got, lines, folder = _stop_finetune(ckpt, tmp_path, signum)
    name = signal.Signals(signum).name
    assert got == status, lines
    assert lines[-1] == f"interrupted ({name}): no avatar written; its unfinished folder {folder} was removed", lines
    assert not any("interrupted" in line for line in lines[:-1]) and not any("resume" in line for line in lines)
    assert not folder.exists() and not any((tmp_path / "avatars").iterdir())


def test_a_stopped_reenact_says_so_and_leaves_no_partial_file(ckpt, tmp_path, capsys, monkeypatch) -> None:
    avatar = api.make_avatar("syn0004/v00", T=1, mode="FF", ckpt=ckpt, out=tmp_path / "a" / "avatar.pt",
                             preview_frames=2).path
    import talkinghead.inference.reenact as reenact

    real = reenact.render_frames

    def stopped_half_way(*args, **kwargs):  # a SIGTERM arrives after the first batch is written
        for i, frame in enumerate(real(*args, **kwargs)):
            if i == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            yield frame

    monkeypatch.setattr(api, "render_frames", stopped_half_way)  # where api.drive finds it
    out = tmp_path / "o.mp4"
    handler = signal.getsignal(signal.SIGTERM)
    status = cli.main(["reenact", str(avatar), "syn0005/v01", str(out), "--batch-size", "2", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 143 and err == [f"interrupted (SIGTERM): {out} not written; its partial video was removed"], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]
    assert signal.getsignal(signal.SIGTERM) == handler, "the command's SIGTERM handler is gone after it"


# ------------------------------------------------------------------------------------------ clear words
def test_a_ckpt_folder_without_a_checkpoint_says_so(tmp_path, capsys) -> None:
    from talkinghead.inference.avatar import CheckpointError, resolve_checkpoint

    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="is a folder without checkpoints/last.ckpt"):
        resolve_checkpoint(tmp_path / "run")
    msg = one_line_error(capsys, ["finetune", f"ckpt={tmp_path / 'run'}", "id=syn0004/v00",
                                  f"out_dir={tmp_path / 'avatars'}"])
    assert "is a folder without checkpoints/last.ckpt" in msg and "does not exist" not in msg


def test_a_photo_with_two_faces_says_which_it_took(tmp_path) -> None:
    import numpy as np
    from PIL import Image

    from conftest import synthetic_heads
    from talkinghead.inference.shots import photo_frames

    img, pts = synthetic_heads(1, 1).render(0, 0, 0.0, 128)
    photo = tmp_path / "two people.png"
    Image.fromarray(np.asarray(img)).save(photo)
    pts = np.asarray(pts, dtype=np.float32)
    small = pts * 0.25

    class TwoFaces:
        name = "two"

        def faces(self, frames):
            return [[(np.array([0, 0, 20, 20.0]), small), (np.array([10, 12, 110, 120.0]), pts)] for _ in frames]

        def detect(self, frames):
            return [pts for _ in frames]

    person = photo_frames([photo], 32, TwoFaces())
    assert person.notes == [f"2 faces in {photo}: took the largest at (x, y, w, h) = (10, 12, 100, 108)"]
    one = photo_frames([photo], 32, type("One", (), {"name": "one", "detect": TwoFaces.detect,
                                                     "faces": lambda self, f: [[(np.zeros(4), pts)]]})())
    assert one.notes == []


def test_a_stopped_evaluate_says_so_and_removes_its_unfinished_folder(ckpt, tmp_path, capsys, monkeypatch) -> None:
    import talkinghead.evaluation.evaluate as ev

    def stopped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the command")

    monkeypatch.setattr(ev, "fit_avatar", stopped)
    status = cli.main(["evaluate", f"ckpt={ckpt}", "T_values=[1]", "num_targets=2", "max_videos=1",
                       f"out_dir={tmp_path / 'ev'}", "logger=csv", "progress=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 143 and len(err) == 1, err
    assert err[0].startswith("interrupted (SIGTERM): no table written; its unfinished folder ")
    assert not any((tmp_path / "ev").iterdir())


@pytest.mark.parametrize("name, overrides", [("meta_learn", []), ("meta_learn", ["experiment=vox2_paper"]),
                                             ("finetune", ["id=x"]), ("evaluate", [])])
def test_every_yes_no_key_of_the_configs_is_read_as_one(name, overrides) -> None:
    """The keys whose defaults are true/false are the ones ``config.FLAGS`` reads (a new one must join them)."""
    from omegaconf import OmegaConf

    from talkinghead.config import FLAGS

    def bools(d: dict, prefix: str = "") -> set[str]:
        found = set()
        for k, v in d.items():
            if isinstance(v, dict):
                found |= bools(v, f"{prefix}{k}.")
            elif isinstance(v, bool) and k != "_partial_":
                found.add(prefix + k)
        return found

    cfg = OmegaConf.to_container(compose(name, overrides), resolve=True)
    assert bools(cfg) <= set(FLAGS[name])
    # callbacks.build's settings are one interpolated node each (cfg: ${callbacks.health}): set where they come from
    settable = {k for k in bools(cfg) if not k.startswith("callbacks.build.")}
    flipped = compose(name, [*overrides, *(f"{k}=off" for k in sorted(settable))])
    assert all(OmegaConf.select(flipped, k) is False for k in bools(cfg))


def test_make_finetune_with_overwrite_0_keeps_an_existing_file(ckpt, tmp_path) -> None:
    precious = tmp_path / "mine.pt"
    precious.write_bytes(b"precious")
    proc = subprocess.run(
        ["make", "-s", "finetune", "ID=syn0004/v00", "T=1", "MODE=FF", f"CKPT={ckpt}", "OVERWRITE=0",
         f"PYTHON={sys.executable}", f"ARGS=~logger progress=false out={precious}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
    )
    err = [line for line in proc.stderr.splitlines() if not line.startswith("make")]
    assert proc.returncode != 0 and len(err) == 1 and f"{precious} exists" in err[0], proc.stderr
    assert precious.read_bytes() == b"precious"
