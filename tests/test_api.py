"""talkinghead.api: the one Python API under the finetune/reenact commands and the demo page."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_helpers import tiny_checkpoint
from talkinghead import api
from talkinghead.inference.avatar import load_avatar
from talkinghead.inference.fewshot import FineTuneSettings


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("meta") / "run")


def test_make_avatar_then_drive_it_reports_progress(ckpt, tmp_path) -> None:
    meta = api.load_model(ckpt)
    seen: list[tuple[float, str]] = []
    made = api.make_avatar(
        "syn0005/v01", T=4, mode="FT", meta=meta, settings=FineTuneSettings.from_recipe(steps=3, batch_size=2, epochs=None),
        out_dir=tmp_path, preview_frames=6, progress=lambda f, m: seen.append((f, m)),
    )
    assert made.path == tmp_path / "syn0005_v01_T4_FT" / "avatar.pt" and load_avatar(made.path).steps == 3
    assert made.grid_path.is_file() and made.video_path.is_file() and made.preview_unseen
    assert made.preview["ff"].shape == made.preview["fake"].shape == (6, 3, 32, 32)
    assert made.shots["frames"].shape[0] == 4
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("step 3/3" in m for _, m in seen), seen

    clip = api.drive(made.path, "syn0004/v00", tmp_path / "o.mp4", meta=meta, side_by_side=True,
                     synthetic_frames=10, max_frames=10)
    assert clip.path.is_file() and clip.frames == 10 and clip.fps > 0 and clip.adapted
    assert 0 < clip.first_frame_s <= clip.seconds
    import av

    with av.open(str(clip.path)) as c:
        s = c.streams.video[0]
        assert (s.width, s.height) == (96, 32)
        assert sum(1 for _ in c.decode(s)) == 10


def test_all_frames_used_previews_the_T_frames_and_says_so(ckpt, tmp_path) -> None:
    made = api.make_avatar("syn0005/v01", T=8, mode="FF", ckpt=ckpt, synthetic_video_length=8, out_dir=tmp_path)
    assert not made.preview_unseen and "ff" not in made.preview
    assert any("all 8 frames were used" in n for n in made.notes)


def test_list_runs_samples_curves_and_evaluations(tmp_path) -> None:
    run = tmp_path / "runs" / "r1"
    (run / "samples").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    for i in (200, 100):
        (run / "samples" / f"iter_{i:06d}.png").write_bytes(b"png")
    (run / "csv" / "version_0").mkdir(parents=True)
    (run / "csv" / "version_0" / "metrics.csv").write_text(
        "epoch,step,train/loss_g,val/l1\n0,9,1.5,\n0,19,1.2,\n0,19,,0.4\n"
    )
    (tmp_path / "runs" / "not_a_run").mkdir()
    runs = api.list_runs(tmp_path / "runs")
    assert [r.name for r in runs] == ["r1"]
    assert [i for i, _ in runs[0].samples] == [100, 200] and runs[0].iterations == 200
    curves = api.loss_curves(runs[0])
    assert curves == {"train/loss_g": [(9, 1.5), (19, 1.2)], "val/l1": [(19, 0.4)]}
    ev = tmp_path / "runs" / "evaluate" / "r1_20260101"
    ev.mkdir(parents=True)
    (ev / "table.md").write_text("| T |\n")
    (ev / "table.csv").write_text("T,method,FID\n8,FT,40.0\n")
    found = api.list_evaluations(tmp_path / "runs" / "evaluate")
    assert found[0].rows == [{"T": "8", "method": "FT", "FID": "40.0"}] and found[0].examples is None
    assert api.list_runs(tmp_path / "nowhere") == [] and api.list_evaluations(tmp_path / "nowhere") == []
