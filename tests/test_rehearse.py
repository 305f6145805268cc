"""``make rehearse``: the paper config's optimisation at VoxCeleb scale; here at tiny sizes (``--quick``)."""
from __future__ import annotations

import io
import math

import pytest

from talkinghead import rehearse


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
