"""Files are read without running code in them (issue 30): a crafted checkpoint or avatar is refused in one line
through every path that loads one (the API, resuming, the CLI) and its code never runs; the project's own files,
today's and those written before, still load; an avatar with keys too many or too few is one line."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import ListConfig

from finetune_helpers import QUIET, TINY_MODEL, TINY_SYNTHETIC_DATA, tiny_checkpoint
from talkinghead.inference.avatar import AvatarError, load_avatar, load_meta_learned, save_avatar
from talkinghead.safe_load import UnsafeFileError, safe_load


class Payload:
    """Unpickled, it runs ``touch <marker>`` (what a crafted .ckpt does before anything can look at it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, f"one-line error expected, got {text!r}"
    return text


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("meta") / "run")


@pytest.fixture
def crafted(ckpt, tmp_path) -> tuple[Path, Path]:
    """(a copy of the real checkpoint with the payload among its entries, the marker it would write)."""
    marker = tmp_path / "MARKER"
    data = safe_load(ckpt)
    data["callbacks"] = {"Payload": Payload(marker)}
    path = tmp_path / "crafted" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(data, path)
    assert not marker.exists()
    return path, marker


def test_the_payload_is_real(tmp_path) -> None:
    """The test's crafted file does run its code under an unrestricted load (so its absence below means something)."""
    marker = tmp_path / "MARKER"
    torch.save({"x": Payload(marker)}, tmp_path / "x.ckpt")
    torch.load(tmp_path / "x.ckpt", weights_only=False)
    assert marker.exists()


# ------------------------------------------------------------------------------------------------ the project's files
def test_todays_checkpoint_needs_no_global_beyond_weights_only_and_loads(ckpt) -> None:
    assert torch.serialization.get_unsafe_globals_in_checkpoint(ckpt) == []
    meta = load_meta_learned(ckpt)
    assert meta.image_size == 32 and len(meta.fingerprint) == 16


def test_a_checkpoint_written_before_plain_lists_still_loads_and_resumes(ckpt, tmp_path) -> None:
    """Before commit 7164227 W's SparseAdam kept omegaconf ListConfigs in its param groups: such a checkpoint needs
    omegaconf's classes, which are allowed by name (and nothing else is)."""
    from talkinghead.config import compose
    from talkinghead.training.train import build_meta_learning

    data = safe_load(ckpt)
    for state in data["optimizer_states"]:
        for group in state["param_groups"]:
            for key, value in group.items():
                if isinstance(value, (list, tuple)) and key != "params":
                    group[key] = ListConfig(list(value))
    old = tmp_path / "old.ckpt"
    torch.save(data, old)
    assert "omegaconf.listconfig.ListConfig" in torch.serialization.get_unsafe_globals_in_checkpoint(old), "the case"
    assert load_meta_learned(old).fingerprint == load_meta_learned(ckpt).fingerprint
    resumed = tmp_path / "run" / "checkpoints" / "last.ckpt"
    resumed.parent.mkdir(parents=True)
    old.rename(resumed)
    run = build_meta_learning(compose("meta_learn", [*QUIET, *TINY_MODEL, *TINY_SYNTHETIC_DATA, "K=2",
                                                     "iterations=4", f"run_dir={resumed.parent.parent}"]))
    assert run.ckpt_path == resumed
    run.trainer.num_sanity_val_steps = 0
    run.fit()  # Lightning's own load (weights_only) takes it too
    assert run.module.iteration == 4


def test_an_avatar_saved_today_loads(ckpt, tmp_path) -> None:
    from talkinghead.inference.fewshot import FineTuneSettings, fit_avatar
    from talkinghead.inference.shots import evenly, resolve

    meta = load_meta_learned(ckpt)
    shots = resolve("syn0004/v00", meta.config.data, 32, synthetic_video_length=8).load(evenly(8, 1))
    avatar = fit_avatar(meta, shots, mode="FF", settings=FineTuneSettings.from_recipe(device="cpu"), person_id="syn0004",
                        source="syn0004/v00").avatar
    again = load_avatar(save_avatar(avatar, tmp_path / "avatar.pt"))
    assert torch.equal(again.psi, avatar.psi) and again.fingerprint == meta.fingerprint


# ------------------------------------------------------------------------------------------------ crafted files
def test_the_api_refuses_a_crafted_checkpoint_in_one_line_and_runs_nothing(crafted) -> None:
    from talkinghead import api

    path, marker = crafted
    with pytest.raises(UnsafeFileError) as exc:
        api.load_model(path)
    text = one_line(exc)
    assert str(path) in text and "posix.system" in text and "nothing in it was run" in text
    assert not marker.exists()


def test_a_crafted_avatar_is_refused_in_one_line_and_runs_nothing(tmp_path) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "avatar.pt"
    torch.save({"format": "talkinghead-avatar/1", "psi": Payload(marker)}, path)
    with pytest.raises(UnsafeFileError) as exc:
        load_avatar(path)
    assert str(path) in one_line(exc) and "no avatar file of this project" in str(exc.value)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["bare pickle", "legacy torch.save"])
def test_files_that_are_not_zip_checkpoints_are_refused_too(kind, tmp_path) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "x.ckpt"
    if kind == "bare pickle":
        path.write_bytes(pickle.dumps({"x": Payload(marker)}, protocol=2))
    else:
        torch.save({"x": Payload(marker)}, path, _use_new_zipfile_serialization=False)
    for mmap in (False, True):
        with pytest.raises(UnsafeFileError) as exc:
            safe_load(path, mmap=mmap)
        assert f"{path} is refused: it names posix.system" in one_line(exc)
    assert not marker.exists()


def test_a_pickle_torch_cannot_read_is_one_line_and_runs_nothing(tmp_path) -> None:
    """A protocol-4 pickle (or any non-torch bytes) stops the restricted unpickler before it names a global: the
    loaders word it as not their kind of file, in one line."""
    from talkinghead.inference.avatar import CheckpointError

    marker = tmp_path / "MARKER"
    path = tmp_path / "x.ckpt"
    path.write_bytes(pickle.dumps({"x": Payload(marker)}, protocol=4))
    with pytest.raises(CheckpointError) as exc:
        load_meta_learned(path)
    assert one_line(exc) == f"cannot read checkpoint {path}: its pickle stops at: Unsupported operand 149"
    with pytest.raises(AvatarError) as exc:
        load_avatar(path)
    assert one_line(exc).startswith(f"{path} is not an avatar file (its pickle stops at")
    assert not marker.exists()


def test_resuming_from_a_crafted_checkpoint_is_refused_and_runs_nothing(crafted, tmp_path) -> None:
    """Both loads of resuming: the check before training (``check_resumable``) and Lightning's own (weights_only)."""
    from talkinghead.config import compose
    from talkinghead.training.train import build_meta_learning

    path, marker = crafted
    run_dir = path.parent.parent
    over = [*QUIET, *TINY_MODEL, *TINY_SYNTHETIC_DATA, "K=2", "iterations=1"]
    with pytest.raises(UnsafeFileError) as exc:
        build_meta_learning(compose("meta_learn", [*over, f"run_dir={run_dir}"]))
    assert str(path) in one_line(exc)
    assert not marker.exists()
    run = build_meta_learning(compose("meta_learn", [*over, f"run_dir={tmp_path / 'fresh'}"]))
    run.trainer.num_sanity_val_steps = 0
    run.ckpt_path = path  # past the check (as if the file were swapped after it): Lightning's load refuses it too
    with pytest.raises(UnsafeFileError) as exc:
        run.fit()
    assert str(path) in one_line(exc)
    assert not marker.exists()


def test_the_cli_refuses_a_crafted_checkpoint_for_meta_learn_and_finetune(crafted, tmp_path, capsys) -> None:
    from talkinghead.cli import main

    path, marker = crafted
    over = [*QUIET, *TINY_MODEL, *TINY_SYNTHETIC_DATA, "K=2", "iterations=1", f"run_dir={path.parent.parent}"]
    assert main(["meta-learn", *over]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {path} is refused") and not marker.exists()
    # finetune in a fresh process: nothing of the file runs there either
    proc = subprocess.run(
        [sys.executable, "-m", "talkinghead.cli", "finetune", f"ckpt={path}", "id=syn0004/v00", "T=1", "mode=FF",
         f"out_dir={tmp_path / 'avatars'}", "~logger"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {path} is refused: it names posix.system"), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not marker.exists()
    assert not (tmp_path / "avatars").exists()


# ------------------------------------------------------------------------------------------------ avatar keys
@pytest.mark.parametrize("change", ["unknown", "missing", "both"])
def test_an_avatar_with_keys_too_many_or_too_few_is_one_line(change, ckpt, tmp_path) -> None:
    from talkinghead.inference.fewshot import FineTuneSettings, fit_avatar
    from talkinghead.inference.shots import evenly, resolve

    meta = load_meta_learned(ckpt)
    shots = resolve("syn0004/v00", meta.config.data, 32, synthetic_video_length=8).load(evenly(8, 1))
    avatar = fit_avatar(meta, shots, mode="FF", settings=FineTuneSettings.from_recipe(device="cpu"), person_id="syn0004",
                        source="syn0004/v00").avatar
    data = avatar.to_dict()
    if change in ("unknown", "both"):
        data["sparkle"] = torch.zeros(3)
    if change in ("missing", "both"):
        del data["psi"], data["T"]
    path = tmp_path / "avatar.pt"
    torch.save(data, path)
    with pytest.raises(AvatarError) as exc:
        load_avatar(path)
    text = one_line(exc)
    assert str(path) in text
    assert ("unknown keys sparkle" in text) == (change != "missing")
    assert ("missing keys T, psi" in text) == (change != "unknown")
    data = avatar.to_dict()
    del data["source_png"]  # an optional key (avatars made before full-frame output lack it): still loads
    torch.save(data, path)
    assert load_avatar(path).source_png is None
