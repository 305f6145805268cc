"""PNG line charts (talkinghead.tools.charts): the rehearsal's and a run's loss / health curves in docs."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from PIL import Image

from talkinghead.tools import charts


def _write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([",".join(header), *(",".join("" if v is None else str(v) for v in r) for r in rows)]))


def test_a_resumed_runs_csv_versions_are_read_in_order_and_charted(tmp_path: Path) -> None:
    header = ["epoch", "step", "train/iteration", "train/e_norm", "train/w_e_dist", "val/ssim"]
    _write(tmp_path / "csv/version_0/metrics.csv", header, [[0, 1, 1, 9.0, 0.4, None], [0, 3, 2, 8.0, 0.3, None],
                                                            [0, 3, None, None, None, 0.5]])
    _write(tmp_path / "csv/version_10/metrics.csv", header, [[0, 5, 2, 7.5, 0.2, None], [0, 7, 3, 7.0, 0.1, 0.6]])
    m = charts.read_metrics_csv(tmp_path)
    assert m["train/e_norm"] == ([1.0, 2.0, 3.0], [9.0, 7.5, 7.0]), "version_10 is not the later one"
    assert m["val/ssim"] == ([2.0, 3.0], [0.5, 0.6]), "a row without an iteration belongs to the one before"
    out = charts.run_curves(tmp_path, tmp_path / "c.png")
    with Image.open(out) as im:
        rgb = im.convert("RGB")
        # two panels (embedding, held-out frames), each with its legend beside it
        assert rgb.size == (1000, 2 * 230)
        colours = {c for _, c in rgb.getcolors(1 << 20)}
    assert set(charts.COLOURS[:3]) <= colours


def test_values_that_cannot_be_drawn_break_the_line_and_empty_input_is_refused(tmp_path: Path) -> None:
    panel = charts.Panel("x", {"a": ([0, 1, 2, 3], [1.0, math.nan, 0.0, 2.0])}, log=True, floor=1e-3)
    charts.line_chart([panel], tmp_path / "ok.png")
    with pytest.raises(ValueError, match="no finite values"):
        charts.line_chart([charts.Panel("empty", {"a": ([0], [math.nan])})], tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError, match="logger=csv"):
        charts.read_metrics_csv(tmp_path / "nothing")
    assert charts.main([str(tmp_path / "nothing"), str(tmp_path / "x.png")]) == 2
