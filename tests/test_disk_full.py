"""A full disk (issue 30): writing an avatar, a video or a table that meets ENOSPC is one line naming the folder,
and nothing is left half written under a final name or a temporary one; logging to W&B that fails after the avatar
is written is one warning, not a failed run."""
from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from finetune_helpers import tiny_checkpoint
from talkinghead.inference.avatar import Avatar, load_avatar, save_avatar
from talkinghead.files import DiskFullError, atomic_write_text


def no_space(*_: object) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text, f"one-line error expected, got {text!r}"
    return text


def small_avatar() -> Avatar:
    return Avatar(psi=torch.zeros(4), w_prime=torch.zeros(2), e_new=torch.zeros(2), generator_delta={},
                  reference_landmarks=torch.zeros(68, 2), T=1, mode="FF", steps=0, person_id=None, source="x",
                  model_config={"image_size": 32}, data_config={}, fingerprint="0" * 16, checkpoint="x.ckpt")


@pytest.fixture
def full_torch_save(monkeypatch):
    """torch.save writes half the file, then the disk is full (as a file object's write raises it)."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise no_space()

    monkeypatch.setattr(torch, "save", save)
    return real


def test_a_full_disk_while_saving_an_avatar_is_one_line_and_leaves_nothing(full_torch_save, tmp_path) -> None:
    folder = tmp_path / "avatars" / "me"
    with pytest.raises(DiskFullError) as exc:
        save_avatar(small_avatar(), folder / "avatar.pt")
    text = one_line(exc)
    assert text.startswith(f"no space left on the disk of {folder}/ while writing avatar.pt")
    assert "nothing was written" in text
    assert isinstance(exc.value, OSError)
    assert list(folder.iterdir()) == [], "no final name, no temporary file"


def test_a_full_disk_keeps_the_old_file_whole(full_torch_save, tmp_path) -> None:
    path = tmp_path / "avatar.pt"
    with path.open("wb") as f:
        full_torch_save(small_avatar().to_dict(), f)
    before = path.read_bytes()
    with pytest.raises(DiskFullError, match="the old file is kept"):
        save_avatar(small_avatar(), path)
    assert path.read_bytes() == before and load_avatar(path).source == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["avatar.pt"]


def test_a_full_disk_in_pyav_or_a_text_write_is_the_same_one_line(monkeypatch, tmp_path) -> None:
    import av
    import numpy as np

    from talkinghead.video import write_video

    def full_open(path, *args, **kwargs):
        Path(path).write_bytes(b"\x00\x00\x00\x18ftypmp42")  # the muxer got as far as the header
        raise av.error.OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(av, "open", full_open)
    with pytest.raises(DiskFullError) as exc:
        write_video(tmp_path / "v" / "preview.mp4", [np.zeros((8, 8, 3), np.uint8)])
    assert one_line(exc).startswith(f"no space left on the disk of {tmp_path / 'v'}/ while writing preview.mp4")
    assert list((tmp_path / "v").iterdir()) == []

    def full_write(self, text, *args, **kwargs):
        with self.open("w") as f:
            f.write(text[:3])
        raise no_space()

    monkeypatch.setattr(Path, "write_text", full_write)
    with pytest.raises(DiskFullError) as exc:
        atomic_write_text(tmp_path / "t" / "table.csv", "a,b\n1,2\n")
    assert f"{tmp_path / 't'}/" in one_line(exc)
    assert list((tmp_path / "t").iterdir()) == []


def test_other_write_errors_are_not_called_a_full_disk(monkeypatch, tmp_path) -> None:
    def denied(self, text, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "write_text", denied)
    with pytest.raises(PermissionError):
        atomic_write_text(tmp_path / "table.csv", "x")


# ------------------------------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("meta") / "run", iterations=1)


def finetune_args(ckpt: Path, out_dir: Path, *extra: str) -> list[str]:
    return ["finetune", f"ckpt={ckpt}", "id=syn0004/v00", "T=1", "mode=FF", "synthetic_video_length=8",
            "preview_frames=2", "progress=false", f"out_dir={out_dir}", *extra]


def test_make_finetune_on_a_full_disk_is_one_line_and_no_avatar(ckpt, full_torch_save, tmp_path, capsys) -> None:
    from talkinghead.cli import main

    assert main(finetune_args(ckpt, tmp_path, "~logger")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    folder = tmp_path / "syn0004_v00_T1_FF"
    assert err[-1].startswith(f"error: no space left on the disk of {folder}/ while writing avatar.pt")
    assert not list(tmp_path.rglob("*.pt")), "no avatar, whole or half"


def test_wandb_failing_after_the_avatar_is_written_is_one_warning_and_exit_0(ckpt, monkeypatch, tmp_path,
                                                                            capsys) -> None:
    """The avatar does not depend on its logging: W&B's error once it is safely written (its own full disk, its
    teardown) is a warning line, and the run succeeds."""
    from talkinghead.training import loggers
    from talkinghead.cli import main

    def wandb_fails(*_: object) -> None:
        raise no_space()

    monkeypatch.setattr(loggers, "finetune_to_wandb", wandb_fails)
    assert main(finetune_args(ckpt, tmp_path, "logger=csv")) == 0
    captured = capsys.readouterr()
    avatar = tmp_path / "syn0004_v00_T1_FF" / "avatar.pt"
    warnings = [ln for ln in captured.err.splitlines() if "W&B" in ln]
    assert warnings == [f"warning: logging to W&B failed after {avatar} was written (OSError: [Errno 28] No space "
                        f"left on device); {avatar} is complete and kept"]
    assert f"avatar: {avatar}" in captured.out and load_avatar(avatar).mode == "FF"
