"""Eye metrics (talkinghead.metrics.eyes) and gaze adaptation (talkinghead.landmarks.adapt) on exact synthetic
points: synthetic persons rendered with known gaze and blinks."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import pytest

from data_modules.procedural_heads import Expression, SyntheticHeads
from talkinghead.landmarks.adapt import adapt_landmarks
from talkinghead.landmarks.eyes import from_eye, gaze, to_eye
from talkinghead.landmarks.sets import iris_centres, iris_present, iris_radii, with_irises
from talkinghead.landmarks.smooth import smooth_landmarks
from talkinghead.metrics.eyes import EyeScores, eye_scores

HEADS = SyntheticHeads(6, 2)
N = 90  # frames: the driver (identity 1, video 0) blinks twice (frames 27-28 and 61-62)


def clip(ident: int, change: Callable[[Expression], Expression] = lambda e: e) -> np.ndarray:
    """(N, 72, 2) exact points of ``ident`` moving as identity 1's video 0, its expression changed by ``change``."""
    out = []
    for t in range(N):
        pose, expr = HEADS.motion(1, 0, t)
        expr = change(expr)
        lm = HEADS.render_with(ident, pose, expr, 64)[1]
        out.append(with_irises(lm, *HEADS.irises_with(ident, pose, expr, 64)))
    return np.stack(out)


@pytest.fixture(scope="module")
def driver() -> np.ndarray:
    return clip(1)


VARIANTS: dict[str, tuple[int, Callable[[Expression], Expression]]] = {
    "true eyes": (1, lambda e: e),
    "another person, same motion": (4, lambda e: e),  # wider eyes, further apart
    "turned the other way": (1, lambda e: dataclasses.replace(e, gaze_x=-e.gaze_x, gaze_y=-e.gaze_y)),
    "staring ahead": (1, lambda e: dataclasses.replace(e, gaze_x=0.0, gaze_y=0.0)),
    "held shut": (1, lambda e: dataclasses.replace(e, blink=1.0)),
    "never blinking": (1, lambda e: dataclasses.replace(e, blink=0.0)),
}


@pytest.fixture(scope="module")
def scores(driver) -> dict[str, EyeScores]:
    """Every variant against the driver (``pytest tests/test_eyes.py -s`` prints them: docs/landmarks.md)."""
    out = {name: eye_scores(clip(ident, change), driver) for name, (ident, change) in VARIANTS.items()}
    for name, s in out.items():
        print(f"{name:28s} gaze error {s.gaze_error:.3f}  iris missing {s.iris_missing:.2f}  "
              f"blink correlation {s.blink_correlation:.2f}  blinks missed {s.blinks_missed}/{s.blinks}")
    return out


def test_true_eyes_score_zero(scores) -> None:
    s = scores["true eyes"]
    assert s.gaze_error == 0.0 and s.iris_missing == 0.0 and s.blinks_missed == 0
    assert s.blinks == 2 and s.blink_correlation == pytest.approx(1.0, abs=1e-12)


def test_gaze_is_measured_in_the_eye_not_in_pixels(driver, scores) -> None:
    """Another person with the same gaze: near zero, though its eyes have another size and place."""
    other = clip(4)
    width = lambda p: np.linalg.norm(p[:, 39] - p[:, 36], axis=-1)  # noqa: E731
    assert (width(other) / width(driver)).min() > 1.1  # wider eyes (and further apart)
    s = scores["another person, same motion"]
    assert s.gaze_error < 0.025 and s.blinks_missed == 0 and s.blink_correlation > 0.99


def test_eyes_turned_the_other_way_or_staring_are_clearly_wrong(scores) -> None:
    turned, staring = scores["turned the other way"], scores["staring ahead"]
    assert turned.gaze_error > 0.06 and turned.gaze_error > 4 * scores["another person, same motion"].gaze_error
    assert staring.gaze_error > 0.03
    assert turned.blinks_missed == 0  # the lids still follow


def test_closed_or_never_blinking_eyes_miss_the_blinks(scores) -> None:
    closed = scores["held shut"]
    assert closed.iris_missing == 1.0 and np.isnan(closed.gaze_error) and closed.blinks_missed == 2
    assert closed.blink_correlation < 0.5
    open_ = scores["never blinking"]
    assert open_.blinks_missed == 2 and open_.blink_correlation < 0.5 and open_.iris_missing == 0.0


def test_eye_coordinates_round_trip_and_are_similarity_invariant(driver) -> None:
    p = driver[5].astype(np.float64)
    uv = gaze(p[None])[0]
    assert np.abs(uv).max() < 0.5  # irises inside their eyes
    for e, eye in enumerate(("right", "left")):
        np.testing.assert_allclose(from_eye(p, uv[e], eye), iris_centres(p)[e], atol=1e-9)
        np.testing.assert_allclose(to_eye(p, p[[36, 39] if eye == "right" else [42, 45]], eye),
                                   [[-0.5, 0.0], [0.5, 0.0]], atol=1e-12)
    c, s = np.cos(0.4), np.sin(0.4)
    moved = p @ (1.7 * np.array([[c, -s], [s, c]])).T + [13.0, -4.0]
    np.testing.assert_allclose(gaze(moved[None]), gaze(p[None]), atol=1e-9)


def test_adaptation_moves_the_drivers_gaze_into_another_eye_shape(driver) -> None:
    avatar_ref = clip(4)[0]  # another person: wider eyes, further apart
    adapted = adapt_landmarks(driver, avatar_ref)
    assert adapted.shape == (N, 72, 2)
    # the 68 points are adapted as before; the irises do not change them
    np.testing.assert_array_equal(adapted[:, :68], adapt_landmarks(driver[:, :68], avatar_ref[:68]))
    # same eye-normalised place in the avatar's eyes as in the driver's, exactly; closed eyes stay closed
    np.testing.assert_array_equal(iris_present(adapted), iris_present(driver))
    ok = iris_present(driver)
    np.testing.assert_allclose(gaze(adapted)[ok], gaze(driver)[ok], atol=1e-4)
    # ... which is not where the driver's irises were in pixels, and is between the avatar's eye corners
    assert np.nanmean(np.abs(iris_centres(adapted) - iris_centres(driver))) > 0.3  # eyes further apart
    for e, idx in enumerate((slice(36, 42), slice(42, 48))):
        c = iris_centres(adapted)[:, e][ok[:, e]]
        lo, hi = adapted[ok[:, e], idx, 0].min(1), adapted[ok[:, e], idx, 0].max(1)
        assert ((c[:, 0] > lo) & (c[:, 0] < hi)).all()  # between the corners (a half-shut lid may cover it)
    # the radius follows the eye: the same fraction of the eye width
    w_drv = np.linalg.norm(driver[:, 39] - driver[:, 36], axis=-1)
    w_ad = np.linalg.norm(adapted[:, 39] - adapted[:, 36], axis=-1)
    np.testing.assert_allclose((iris_radii(adapted)[:, 0] / w_ad)[ok[:, 0]], (iris_radii(driver)[:, 0] / w_drv)[ok[:, 0]],
                               rtol=1e-4)
    # against the avatar person rendered with the driver's motion: close (gaze is the same eye-relative motion)
    truth = clip(4)
    assert eye_scores(adapted, driver).gaze_error < 1e-4
    assert eye_scores(truth, adapted).gaze_error < 0.03


def test_adapting_a_face_to_itself_changes_nothing(driver) -> None:
    np.testing.assert_allclose(adapt_landmarks(driver, driver[0]), driver, atol=1e-3)


def test_smoothing_keeps_every_blink(driver) -> None:
    out = smooth_landmarks(driver + np.random.default_rng(0).normal(0, 0.5, driver.shape), fps=25.0)
    assert out.shape == driver.shape
    np.testing.assert_array_equal(iris_present(out), iris_present(driver))
    assert np.isfinite(out[:, :68]).all()
