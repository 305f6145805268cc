"""One set of drive options (``talkinghead.inference.reenact.DriveOptions``) for every surface: ``make reenact``, the page's
Drive and Live tabs, ``make live``; checked when made, one line naming the field."""

from __future__ import annotations

import dataclasses

import pytest

from talkinghead import api, cli
from talkinghead.inference.reenact import DriveOptions, ReenactError

#: fields a surface sets itself, not a flag: the page's decoding bound, a synthetic driver's length (tests, tools)
NOT_FLAGS = {"max_side", "synthetic_frames"}


@pytest.mark.parametrize("changes, message", [
    ({"adapt": "sometimes"}, "adapt must be one of auto, on, off, got 'sometimes'"),
    ({"backend": "tensorrt"}, "backend must be one of torch, onnx, auto, got 'tensorrt'"),
    ({"landmarks": "guess"}, "landmarks must be one of track, detect, got 'guess'"),
    ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ({"max_frames": -1}, "max_frames must be >= 0, got -1"),
    ({"full": True, "side_by_side": True}, "full and side_by_side cannot be combined"),
    ({"fulll": True}, "no drive option 'fulll': did you mean full?"),
])
def test_bad_options_are_one_line_naming_the_field(changes, message) -> None:
    with pytest.raises(ReenactError) as err:
        DriveOptions.of(**changes)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_changes_keep_the_other_fields() -> None:
    base = DriveOptions(adapt="off", backend="torch")
    changed = DriveOptions.of(base, full=True)
    assert (changed.adapt, changed.backend, changed.full) == ("off", "torch", True)
    assert base.full is False  # frozen: a surface's options are never changed under it


def test_the_cli_flags_are_the_options() -> None:
    """Every option but those a surface sets itself is a ``reenact`` flag, read into the options by its name."""
    argv = ["reenact", "a.pt", "syn0005/v01", "o.mp4", "--full", "--adapt", "off", "--backend", "torch",
            "--max-frames", "7", "--reference", "first", "--smooth", "off", "--landmarks", "detect",
            "--batch-size", "3", "--device", "cpu", "--speed", "plain", "--fps", "12.5", "--onnx", "x.onnx"]
    parser = cli.build_parser()
    args = parser.parse_args(argv)
    got = cli._drive_options(args)
    assert got == DriveOptions(full=True, adapt="off", backend="torch", max_frames=7, reference="first",
                               smooth="off", landmarks="detect", batch_size=3, device="cpu", speed="plain",
                               fps=12.5, onnx="x.onnx")
    flags = {f.name for f in dataclasses.fields(DriveOptions)} - NOT_FLAGS
    assert flags <= set(vars(args)), f"options without a reenact flag: {sorted(flags - set(vars(args)))}"
    live = cli._drive_options(parser.parse_args(["live", "a.pt", "--adapt", "on", "--backend", "onnx"]))
    assert (live.adapt, live.backend) == ("on", "onnx")


def test_the_api_refuses_a_misspelt_option_before_any_work(tmp_path) -> None:
    with pytest.raises(ReenactError, match="did you mean side_by_side"):
        api.drive(tmp_path / "missing.pt", "syn0005/v01", tmp_path / "o.mp4", side_by_sid=True)
    assert not (tmp_path / "o.mp4").exists()


def test_the_library_speaks_of_parameters_the_cli_adds_its_flag(tmp_path, capsys) -> None:
    with pytest.raises(ReenactError) as err:
        DriveOptions(batch_size=0)
    assert "--" not in str(err.value) and err.value.option == "batch_size"
    code = cli.main(["reenact", str(tmp_path / "a.pt"), "syn0005/v01", str(tmp_path / "o.mp4"), "--batch-size", "0"])
    line = capsys.readouterr().err.strip()
    assert code == 2 and line == "error: batch_size must be >= 1, got 0 (--batch-size)"


def test_both_backends_play_the_renderer_role() -> None:
    """torch's and onnxruntime's avatar renderers are the one role drive, live and evaluation render through."""
    from talkinghead.inference.avatar import AvatarRenderer
    from talkinghead.inference.export import OnnxAvatarRenderer
    from talkinghead.inference.render import AvatarFrames

    names = {n for n in dir(AvatarFrames) if not n.startswith("_")} | set(AvatarFrames.__annotations__)
    assert names == {"avatar", "backend", "device", "render"}
    assert (AvatarRenderer.backend, OnnxAvatarRenderer.backend) == ("torch", "onnxruntime")
    assert callable(AvatarRenderer.render) and callable(OnnxAvatarRenderer.render)
