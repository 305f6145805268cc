"""``make rehearse``: the paper config's optimisation at VoxCeleb scale; here at tiny sizes (``--quick``)."""
from __future__ import annotations

import io
import math

import pytest

from talkinghead.tools import rehearse


def test_a_non_finite_term_stops_the_rehearsal_with_status_2() -> None:
    out = io.StringIO()
    result = rehearse.rehearse(["loss.weights.adversarial=nan"], rows=500, iterations=3, quick=True, size=32,
                               every=1, out=out)
    assert result.status == rehearse.NON_FINITE, out.getvalue()[-500:]
    assert "g_total" in result.verdict and "NON-FINITE" in out.getvalue()
    assert len(result.trace.rows) == 1, "it did not stop at the first non-finite iteration"


@pytest.mark.slow
def test_quick_rehearsal_reports_every_column_and_judges_the_embedding_norm() -> None:
    out = io.StringIO()
    result = rehearse.rehearse([], rows=500, iterations=3, quick=True, size=32, every=1, out=out)
    text = out.getvalue()
    assert result.status == rehearse.HEALTHY, text[-800:]
    assert len(result.trace.rows) == 3 and "W 500 x 32 (w_norm=none" in text
    for column in ("e_norm", "w_norm", "w_e_dist", "d_hinge", "d_real", "d_fake", "g_adversarial",
                   "g_feature_matching", "g_match"):
        assert all(math.isfinite(r[column]) for r in result.trace.rows), column
    assert "W: " in text and "optimiser state" in text and "verdict: OK" in text
    # the same trace judged against a stricter fraction (a norm below 10x its start) is a collapse
    strict = rehearse.rehearse([], rows=500, iterations=3, quick=True, size=32, every=1, collapse_fraction=10.0,
                               out=io.StringIO())
    assert strict.status == rehearse.COLLAPSED and "COLLAPSE" in strict.verdict


def test_w_cost_counts_what_a_step_touches() -> None:
    dense = rehearse.w_cost(2000, "spectral", batch=4, emb_dim=16, steps=1)
    sparse = rehearse.w_cost(2000, "none", batch=4, emb_dim=16, steps=1)
    assert dense["grad_bytes"] == 2000 * 16 * 4, "the spectrally normalised W's gradient is dense"
    assert sparse["grad_bytes"] <= 4 * (16 * 4 + 8), "the sparse gradient holds more than the batch's rows"
    assert dense["state_bytes"] == sparse["state_bytes"] == 2 * 2000 * 16 * 4


# The embedder's last ReLU meets an L1 pull towards W's rows, which it cannot yet tell apart: their per-entry median
# is 0, so at the paper's weight 10 the outputs are driven to 0, the ReLU dies and ê stays 0 (E gets no gradient
# again), whatever W's normalisation; FSTH's weight 0.01 keeps ê (docs/paper.md rows 28, 61).  The tiny widths move
# slowly at the paper's lr 5e-5, so E/G's lr is raised alike in every case: the same trend in 12 iterations that the
# paper widths show within 40 (docs/training.md, "Rehearsal").  FSTH's pooling order (ReLU per position, then sum,
# ``model.embedder.pool=relu_sum``) does not save weight 10: ê collapses with it as well.
@pytest.mark.parametrize("overrides, status", [
    (["model.discriminator.w_norm=spectral", "loss.w_from_fakes=true", "loss.weights.match=10"], rehearse.COLLAPSED),
    (["loss.weights.match=10"], rehearse.COLLAPSED),
    (["loss.weights.match=10", "model.embedder.pool=relu_sum"], rehearse.COLLAPSED),
    ([], rehearse.HEALTHY),
], ids=["before: normalised W, weight 10", "plain W, weight 10", "FSTH's pooling order, weight 10",
        "the paper config as shipped"])
def test_tiny_rehearsal_collapses_at_the_papers_match_weight_and_not_with_fsths(overrides, status) -> None:
    out = io.StringIO()
    result = rehearse.rehearse(["optim.g.lr=1e-3", *overrides], rows=500, iterations=12, quick=True, size=32,
                               every=4, out=out)
    text = out.getvalue()
    assert result.status == status, text[-800:]
    if status == rehearse.COLLAPSED:
        assert result.e_end < 0.1 * result.e_start and "COLLAPSE" in result.verdict
    else:
        assert "match weight 0.01" in text, "the shipped paper config is not the fix this test measured"
        assert result.e_end > 0.5 * result.e_start, result.verdict


def test_printed_rehearsals_are_read_back_and_charted(tmp_path) -> None:
    """``--chart`` reads what a rehearsal printed (label from its settings, every printed row) and draws it;
    a file that is not a rehearsal's output is refused in one line."""
    out = io.StringIO()
    rehearse.rehearse(["loss.weights.match=10"], rows=500, iterations=2, quick=True, size=32, every=1, out=out)
    log = tmp_path / "run.log"
    log.write_text("some make noise\n" + out.getvalue())
    label, rows = rehearse.read_log(log)
    assert label == "W plain, match weight 10" and [r["iteration"] for r in rows] == [1.0, 2.0]
    assert "E pools sum_relu" in out.getvalue()
    fsth = tmp_path / "fsth.log"
    fsth.write_text(out.getvalue().replace("E pools sum_relu", "E pools relu_sum"))
    assert rehearse.read_log(fsth)[0] == "W plain, match weight 10, E: ReLU then sum (FSTH)"
    same = tmp_path / "seed2.log"
    same.write_text(log.read_text())
    assert [lbl for lbl, _ in rehearse.read_logs([log, fsth, same])] == [
        "W plain, match weight 10 (run)", "W plain, match weight 10, E: ReLU then sum (FSTH)",
        "W plain, match weight 10 (seed2)"], "logs with the same settings must be told apart in the chart"
    assert all(math.isfinite(r["e_norm"]) and math.isnan(r["g_content_vgg19"]) for r in rows)
    png = tmp_path / "chart.png"
    assert rehearse.main(["--chart", str(png), str(log)]) == rehearse.HEALTHY
    from PIL import Image

    with Image.open(png) as im:
        assert im.size[0] == 1000 and im.size[1] > 4 * 200
        colours = {c for _, c in im.convert("RGB").getcolors(1 << 20)}
    from talkinghead.tools.charts import COLOURS

    assert COLOURS[0] in colours, "the series was not drawn"
    bad = tmp_path / "other.log"
    bad.write_text("hello\n")
    with pytest.raises(ValueError, match="not the output of a rehearsal"):
        rehearse.read_log(bad)
