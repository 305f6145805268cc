"""`make finetune` / `make reenact` lose nothing and say what is wrong in one line: an existing avatar or OUT is
kept (a numbered one is written, or OVERWRITE=1 replaces it), OUT may not be an input, wrong-typed values, an
unwritable output folder (found before any work) and paths with any characters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import demo_helpers
from finetune_helpers import tiny_checkpoint
from talkinghead import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("cli") / "tiny")


def finetune(ckpt: Path, out_dir: Path, *extra: str) -> Path:
    return cli.finetune_main(
        [f"ckpt={ckpt}", "id=syn0004/v00", "T=1", "mode=FF", f"out_dir={out_dir}", "~logger", "progress=false",
         "preview_frames=2", *extra]
    )


def one_line_error(capsys, argv: list[str]) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def unwritable(tmp_path: Path) -> Path:
    ro = tmp_path / "read-only"
    ro.mkdir()
    ro.chmod(0o555)
    if os.access(ro, os.W_OK):  # root writes anywhere: a sysfs folder is read-only even for root
        ro = Path("/sys")
        if not ro.is_dir() or os.access(ro, os.W_OK) and not ro.is_mount():
            pytest.skip("no read-only folder for this user")
    return ro


def test_a_rerun_keeps_the_existing_avatar_and_says_where_the_new_one_goes(ckpt, tmp_path, capsys) -> None:
    first = finetune(ckpt, tmp_path)
    before = first.read_bytes()
    second = finetune(ckpt, tmp_path)
    assert first.read_bytes() == before and second == tmp_path / "syn0004_v00_T1_FF-2" / "avatar.pt"
    assert second.is_file() and "writing " + str(second.parent) in capsys.readouterr().err
    third = finetune(ckpt, tmp_path, "overwrite=true")
    assert third == first, "asked: replaced in place"
    msg = one_line_error(capsys, ["finetune", f"ckpt={ckpt}", "id=syn0004/v00", "T=1", "mode=FF", f"out={first}"])
    assert "exists" in msg and "overwrite=true" in msg


@pytest.mark.parametrize("value, shown", [("abc", "'abc'"), ("", "''"), ("1.5", "1.5"), ("0", "0")])
def test_a_wrong_T_is_one_line_and_nothing_is_written(ckpt, tmp_path, capsys, value, shown) -> None:
    msg = one_line_error(capsys, ["finetune", f"ckpt={ckpt}", "id=syn0004/v00", f"T={value}", f"out_dir={tmp_path}"])
    assert msg == f"error: T must be an integer >= 1, got {shown}"
    assert not any(tmp_path.iterdir())


def test_other_wrong_numbers_are_one_line(ckpt, tmp_path, capsys) -> None:
    msg = one_line_error(capsys, ["finetune", "id=syn0004/v00", "epochs=many", f"out_dir={tmp_path}"])
    assert msg == "error: epochs must be a number > 0 or null, got 'many'"


def test_an_unwritable_output_folder_is_named_before_any_work(tmp_path, capsys) -> None:
    ro = unwritable(tmp_path)
    # no checkpoint and no avatar exist: the folder is checked first
    msg = one_line_error(capsys, ["finetune", f"ckpt={tmp_path / 'none.ckpt'}", "id=syn0004/v00",
                                  f"out_dir={ro / 'avatars'}"])
    assert msg.startswith("error: cannot write the avatar") and f"the folder {ro} is not writable" in msg, msg
    msg = one_line_error(capsys, ["reenact", str(tmp_path / "none.pt"), "syn0005/v00", str(ro / "sub" / "out.mp4")])
    assert msg.startswith("error: cannot write OUT") and f"the folder {ro} is not writable" in msg, msg
    (tmp_path / "file").write_text("x")
    msg = one_line_error(capsys, ["reenact", str(tmp_path / "none.pt"), "syn0005/v00", str(tmp_path / "file" / "o.mp4")])
    assert f"{tmp_path / 'file'} is a file, not a folder" in msg


def test_reenact_never_replaces_an_input_or_an_earlier_result(ckpt, tmp_path, capsys) -> None:
    avatar = finetune(ckpt, tmp_path / "avatars")
    driver = demo_helpers.write_video("driver", tmp_path / "driver.mp4")
    before = driver.read_bytes()
    msg = one_line_error(capsys, ["reenact", str(avatar), str(driver), str(driver), "--overwrite"])
    assert msg == f"error: OUT {driver} is the driver itself: give another OUT (the driver is kept)"
    assert driver.read_bytes() == before
    out = tmp_path / "out.mp4"
    first = cli.reenact_main(avatar, "syn0005/v01", out, synthetic_frames=4, progress=False)
    made = first.read_bytes()
    second = cli.reenact_main(avatar, "syn0005/v01", out, synthetic_frames=6, progress=False)
    assert first == out and out.read_bytes() == made and second == tmp_path / "out-2.mp4" and second.is_file()
    assert f"writing {second}" in capsys.readouterr().err
    assert cli.reenact_main(avatar, "syn0005/v01", out, synthetic_frames=6, progress=False, overwrite=True) == out


def test_paths_with_any_characters_work_unquoted(ckpt, tmp_path) -> None:
    folder = tmp_path / "vidéos d'été (1)"
    video = demo_helpers.write_video("person", folder / "l'été, 2.mp4")
    out = cli.finetune_main(
        [f"ckpt={ckpt}", f"id={video}", "T=2", "mode=FF", f"out_dir={folder / 'avatars'}", "~logger",
         "progress=false"],
        detector=demo_helpers.detector(),
    )
    assert out.is_file() and out.parent.parent == folder / "avatars"


def test_make_passes_such_paths_and_a_wrong_T_is_one_line(ckpt, tmp_path) -> None:
    odd = tmp_path / "dossier d'Éloïse" / "vidéo \"1\" (2).mp4"  # ($ is make's own: write $$)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
    proc = subprocess.run(
        ["make", "-s", "finetune", f"ID={odd}", "T=", f"PYTHON={sys.executable}", f"ARGS=out_dir={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    err = [line for line in proc.stderr.splitlines() if not line.startswith("make")]
    assert proc.returncode != 0 and err == ["error: T must be an integer >= 1, got ''"], proc.stderr
    proc = subprocess.run(
        ["make", "-s", "finetune", f"ID={odd}", "T=1", f"CKPT={ckpt}", f"PYTHON={sys.executable}",
         f"ARGS=~logger out_dir={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    err = [line for line in proc.stderr.splitlines() if not line.startswith("make")]
    assert err and err[-1].startswith("error: ") and str(odd) in err[-1] and len(err) == 1, proc.stderr


def test_an_override_hydra_cannot_read_says_how_to_quote_it(capsys) -> None:
    msg = one_line_error(capsys, ["finetune", "id=syn0004/v00", "mode=F'F"])
    assert msg.endswith("""quote the value, e.g. mode='F\\'F' (in make: ARGS="mode='F\\'F'")"""), msg
