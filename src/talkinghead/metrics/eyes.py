"""Eye metrics: does the output look where the driver looks, and blink when it blinks?

Both take per-frame landmarks of the output and of the driver (``ibug68+iris`` points, ``(N, 72, 2)``; e.g. the
68 points of a landmark detector plus an iris locator, run on the output frames and on the driver's):

* **gaze error** -- the distance between the output's and the driver's iris centres in eye-normalised coordinates
  (``talkinghead.landmarks.eyes``: relative to the eye corners, in eye widths), averaged over the frames and eyes
  where both irises are present.  Face size, head position and roll do not enter it; 0 = the same gaze.
  ``iris_missing``: the fraction of the driver's present irises that the output lacks (an eye closed or lost).
* **blink score** -- the Pearson correlation over time of the output's eye opening (eye aspect ratio from the
  eyelid points, mean of both eyes) with the driver's, and the driver's blinks the output misses.  A blink is a
  run of frames whose opening is below ``BLINK_FRACTION`` of the clip's median opening (each clip against its
  own median: an avatar's eyes may be narrower than the driver's); it is missed when the output's opening is not
  below its own threshold in any frame of the run (or one frame either side), or when the output's eyes are never
  open (median opening below ``MIN_OPEN_EAR``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkinghead.landmarks.eyes import eye_aspect_ratio, gaze
from talkinghead.landmarks.sets import iris_present

__all__ = ["BLINK_FRACTION", "MIN_OPEN_EAR", "EyeScores", "blinks", "eye_scores", "gaze_error", "gaze_errors", "blink_score"]

#: an eye is closed (blinking) below this fraction of the clip's median eye opening
BLINK_FRACTION = 0.5
#: an output whose median eye opening (EAR) is below this never opens its eyes, so it catches no blink (open eyes:
#: about 0.3 for people, 0.6 for the procedural heads; shut: under 0.1)
MIN_OPEN_EAR = 0.1


@dataclass(frozen=True)
class EyeScores:
    """``gaze_error`` (eye widths; NaN when no frame has both irises), ``iris_missing`` (fraction),
    ``blink_correlation`` (Pearson; NaN when an opening does not vary), ``blinks`` (the driver's) and
    ``blinks_missed``."""

    gaze_error: float
    iris_missing: float
    blink_correlation: float
    blinks: int
    blinks_missed: int


def _check(output: np.ndarray, driver: np.ndarray, points: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    o, d = np.asarray(output, dtype=np.float64), np.asarray(driver, dtype=np.float64)
    if o.shape != d.shape or o.ndim != 3 or o.shape[1] not in points or o.shape[2] != 2 or len(o) == 0:
        want = " or ".join(f"(N, {p}, 2)" for p in points)
        raise ValueError(f"output and driver landmarks must both be {want} with N >= 1, got {o.shape} and {d.shape}")
    return o, d


def gaze_errors(output: np.ndarray, driver: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``(errors, missing, present)`` of ``(N, 72, 2)`` output landmarks against the driver's: the gaze error of
    every (frame, eye) where both irises are present (eye widths), how many of the driver's ``present`` irises the
    output lacks.  For totals over several clips; :func:`gaze_error` is their summary."""
    o, d = _check(output, driver, (72,))
    drv = iris_present(d)
    err = np.linalg.norm(gaze(o) - gaze(d), axis=-1)[iris_present(o) & drv]
    return err, int((drv & ~iris_present(o)).sum()), int(drv.sum())


def gaze_error(output: np.ndarray, driver: np.ndarray) -> tuple[float, float]:
    """``(gaze error, iris_missing)`` of ``(N, 72, 2)`` output landmarks against the driver's (module docstring)."""
    err, missing, present = gaze_errors(output, driver)
    return (float(err.mean()) if err.size else float("nan")), (missing / present if present else 0.0)


def blinks(opening: np.ndarray, fraction: float = BLINK_FRACTION) -> list[tuple[int, int]]:
    """Blinks of an (N,) eye-opening series: ``[(first frame, last frame + 1), ...]`` of the runs below
    ``fraction`` x its median."""
    closed = np.asarray(opening) < fraction * np.median(opening)
    edges = np.diff(np.concatenate([[0], closed.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def blink_score(output: np.ndarray, driver: np.ndarray) -> tuple[float, int, int]:
    """``(correlation, driver's blinks, blinks missed)`` of (N, 68 or 72, 2) output landmarks against the driver's."""
    o, d = _check(output, driver, (68, 72))
    eo, ed = eye_aspect_ratio(o).mean(-1), eye_aspect_ratio(d).mean(-1)
    corr = float(np.corrcoef(eo, ed)[0, 1]) if eo.std() > 1e-12 and ed.std() > 1e-12 else float("nan")
    out_closed = eo < BLINK_FRACTION * np.median(eo)
    runs = blinks(ed)
    opens = np.median(eo) >= MIN_OPEN_EAR
    missed = sum(not (opens and out_closed[max(0, a - 1) : b + 1].any()) for a, b in runs)
    return corr, len(runs), int(missed)


def eye_scores(output: np.ndarray, driver: np.ndarray) -> EyeScores:
    """Gaze error and blink score of (N, 72, 2) output landmarks against the driver's (module docstring)."""
    err, missing = gaze_error(output, driver)
    corr, n, missed = blink_score(output, driver)
    return EyeScores(err, missing, corr, n, missed)
