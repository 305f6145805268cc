"""The Table 1 protocol on a tiny setup: CSV rows for T x {FT, FF}, markdown beside the paper, clear errors."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from finetune_helpers import tiny_checkpoint
from talkinghead.errors import ConfigError
from talkinghead.evaluation.evaluate import EvaluationError, Row, csv_text, evaluate_main, markdown_table


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("meta") / "run")


def test_evaluate_writes_a_row_per_T_and_method(ckpt, tmp_path, capsys) -> None:
    out = evaluate_main(
        [
            f"ckpt={ckpt}",
            "T_values=[1,2]",
            "num_targets=3",
            "finetune.steps=2", "finetune.epochs=null",
            "max_videos=2",
            f"out_dir={tmp_path}",
            "logger=csv",
            "progress=false",
        ]
    )
    rows = list(csv.DictReader(out.open()))
    assert [(r["T"], r["method"]) for r in rows] == [("1", "FT"), ("1", "FF"), ("2", "FT"), ("2", "FF")]
    for r in rows:
        assert r["videos"] == "2" and r["frames"] == "6"
        assert 0.0 < float(r["SSIM"]) <= 1.0 and -1.0 <= float(r["CSIM"]) <= 1.0
        assert r["FID"] == "", "FID without its weights is left empty, never made up"
        assert r["blinks"].isdigit() and r["blinks_missed"].isdigit(), "the eye scores ran on every row"
    table = (out.parent / "table.md").read_text()
    assert "- eyes (eyes=true): gaze error" in table
    assert (
        "| T | method | videos | FID ↓ | SSIM ↑ | CSIM ↑ | paper FID, VoxCeleb1 | paper FID, VoxCeleb2 | gaze error ↓ "
        in table
    )
    assert "| 1 | FT | 2 | unavailable |" in table and "- FID unavailable:" in table
    assert table.strip() in capsys.readouterr().out
    assert (out.parent / "examples.png").is_file()
    assert not [p for p in out.parent.iterdir() if ".partial" in p.name]


def test_markdown_and_csv_put_the_papers_figures_beside_ours() -> None:
    rows = [
        Row(8, "FT", 3, 96, {"fid": None, "ssim": 0.5, "csim": 0.25}),
        Row(32, "FF", 3, 96, {"fid": 12.34, "ssim": 0.6, "csim": 0.3}),
    ]
    md = markdown_table(rows, ["note"])
    assert "| 8 | FT | 3 | unavailable | 0.500 | 0.250 | 38.0 | 42.2 | unavailable |" in md
    assert "| 32 | FF | 3 | 12.3 | 0.600 | 0.300 | — | — |" in md
    lines = csv_text(rows).splitlines()
    assert lines[0] == "T,method,videos,frames,FID,SSIM,CSIM,seconds,gaze_error,iris_missing,blink_r,blinks,blinks_missed"
    assert lines[1].startswith("8,FT,3,96,,0.500000,0.250000")


def test_bad_settings_are_clear_errors(ckpt, tmp_path) -> None:
    with pytest.raises(ConfigError, match="methods must be"):
        evaluate_main([f"ckpt={ckpt}", "methods=[XX]", f"out_dir={tmp_path}", "~logger"])
    with pytest.raises(ConfigError, match="T_values"):
        evaluate_main([f"ckpt={ckpt}", "T_values=[0]", f"out_dir={tmp_path}", "~logger"])
    with pytest.raises(
        EvaluationError, match="metrics: .*arcface|metrics: .*ArcFace|metrics: .*model_ir_se50"
    ):
        evaluate_main(
            [
                f"ckpt={ckpt}",
                "metrics.csim_encoder=arcface",
                f"metrics.arcface_weights={tmp_path}/no.pth",
                f"out_dir={tmp_path}/ev",
                "~logger",
            ]
        )
    assert not (tmp_path / "ev").exists(), "no output before the inputs are checked"
    with pytest.raises(ConfigError, match="unit must be one of"):
        evaluate_main([f"ckpt={ckpt}", "unit=clip", f"out_dir={tmp_path}/ev", "~logger"])
    with pytest.raises(ConfigError, match="has no units"):  # the synthetic population has persons and videos only
        evaluate_main([f"ckpt={ckpt}", "unit=utterance", f"out_dir={tmp_path}/ev", "~logger"])
    assert not (tmp_path / "ev").exists()


def test_ff_rows_use_ff_ckpt_and_say_which_model_they_are(ckpt, tmp_path, monkeypatch) -> None:
    """Without ff_ckpt the table says its FF rows are the FT model un-fine-tuned; with one, the FF rows are made
    from it (and it is reported as having the match term or not); another model size is a one-line error."""
    import talkinghead.evaluation.evaluate as ev
    from talkinghead.inference.avatar import load_meta_learned

    used: list[tuple[str, str]] = []
    real = ev.fit_avatar

    def spy(meta, shots, mode, **kw):
        used.append((mode, str(meta.path)))
        return real(meta, shots, mode=mode, **kw)

    monkeypatch.setattr(ev, "fit_avatar", spy)
    common = ["T_values=[1]", "num_targets=2", "max_videos=1", "finetune.steps=1", "finetune.epochs=null",
              "~logger", "progress=false"]
    out = evaluate_main([f"ckpt={ckpt}", f"out_dir={tmp_path}/a", *common])
    assert "NOT the paper's FF model" in (out.parent / "table.md").read_text()

    ff = tiny_checkpoint(tmp_path / "ff", iterations=1, extra=["loss.weights.match=0"])
    used.clear()
    out = evaluate_main([f"ckpt={ckpt}", f"ff_ckpt={ff}", f"out_dir={tmp_path}/b", *common])
    assert used == [("FT", str(ckpt)), ("FF", str(ff))]
    table = (out.parent / "table.md").read_text()
    assert f"FF rows: {ff}, a separate model meta-learned without the match term" in table

    out = evaluate_main([f"ckpt={ckpt}", f"ff_ckpt={ckpt}", "methods=[FF]", f"out_dir={tmp_path}/c", *common])
    weight = float(load_meta_learned(ckpt).config.loss.weights.match)
    assert weight > 0
    assert f"WITH the match term (loss.weights.match={weight:g})" in (out.parent / "table.md").read_text()

    meta = load_meta_learned(ckpt)
    meta.config.model.image_size = 64  # as if the FT model were another size
    with pytest.raises(EvaluationError, match="another model size") as info:
        ev.load_ff_model(str(ff), meta)
    assert "\n" not in str(info.value)


def test_the_wandb_table_takes_every_column_of_the_csv(ckpt, tmp_path, monkeypatch) -> None:
    """`make evaluate`'s default logger (W&B, offline without a key) gets a table row of every column."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = evaluate_main([f"ckpt={ckpt}", "T_values=[1]", "methods=[FF]", "num_targets=2", "max_videos=1",
                         f"out_dir={tmp_path}", "logger=wandb", "progress=false"])
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and rows[0]["blinks"].isdigit()
    assert list((tmp_path / out.parent.name / "wandb").glob("offline-run-*/*.wandb")) or list(
        tmp_path.rglob("offline-run-*/*.wandb")), "an offline W&B run was written"
