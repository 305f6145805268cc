"""The landmark sets: which points a model is conditioned on, and the one rule for telling them apart.

* ``ibug68`` -- the paper's 68 iBUG points, ``(68, 2)`` pixels per frame.  It carries no gaze: a model
  conditioned on it cannot know where the driver looks.
* ``ibug68+iris`` -- the same 68 points and, per eye, the iris as two more points: its centre and a point on
  its rim (the radius is their distance).  ``(72, 2)`` pixels per frame::

      68  right iris centre   (the eye of points 36-41)
      69  right iris rim point
      70  left iris centre    (the eye of points 42-47)
      71  left iris rim point

  An absent iris (a closed eye, or the locator found none) is NaN in both of its rows.  Two points rather than a
  centre and a radius: every geometric step the 68 points go through (crop, resize, flip, adaptation) moves the
  iris and scales its radius with them, with no code of its own.

A set is recorded as its name in the model config (``model.landmarks``), and so in checkpoints, avatars, exported
ONNX files and shard manifests.  Anything recorded before sets existed holds no name and means ``ibug68``.
Arrays say their set by their point count (:func:`set_of_points`).
"""

from __future__ import annotations

from typing import Any, Final, Mapping

import numpy as np

from talkinghead.errors import TalkingHeadError

__all__ = [
    "IBUG68",
    "IBUG68_IRIS",
    "LANDMARK_SETS",
    "IRIS_ROWS",
    "EYE_POINTS",
    "LandmarkSetError",
    "check_set",
    "recorded_set",
    "set_of_points",
    "require_same_set",
    "num_points",
    "with_irises",
    "iris_centres",
    "iris_radii",
    "iris_present",
    "landmarks_68",
    "absent_note",
]

IBUG68: Final[str] = "ibug68"
IBUG68_IRIS: Final[str] = "ibug68+iris"

#: set name -> points per frame
LANDMARK_SETS: Final[dict[str, int]] = {IBUG68: 68, IBUG68_IRIS: 72}

#: eye -> (centre row, rim row) in an ``ibug68+iris`` array
IRIS_ROWS: Final[dict[str, tuple[int, int]]] = {"right": (68, 69), "left": (70, 71)}

#: eye -> its six iBUG contour points (outer corner, two upper lid points, inner corner, two lower lid points)
EYE_POINTS: Final[dict[str, tuple[int, ...]]] = {"right": tuple(range(36, 42)), "left": tuple(range(42, 48))}


class LandmarkSetError(TalkingHeadError, ValueError):
    """An unknown landmark set, or two things made with different sets."""


def check_set(name: Any) -> str:
    """``name`` if it is a known set, else a one-line :class:`LandmarkSetError`."""
    if name not in LANDMARK_SETS:
        raise LandmarkSetError(f"unknown landmark set {name!r}: choose one of {', '.join(LANDMARK_SETS)}")
    return str(name)


def recorded_set(config: Mapping[str, Any] | None, key: str = "landmarks") -> str:
    """The set a model/data config or manifest records under ``key``; none recorded (made before sets) -> ibug68."""
    name = None if config is None else config.get(key)
    return IBUG68 if name is None else check_set(name)


def num_points(name: str) -> int:
    """Points per frame of set ``name``."""
    return LANDMARK_SETS[check_set(name)]


def set_of_points(points: Any) -> str:
    """The set of a ``(..., P, 2)`` landmark array, by its point count P."""
    shape = np.shape(points)
    for name, count in LANDMARK_SETS.items():
        if len(shape) >= 2 and shape[-2:] == (count, 2):
            return name
    raise LandmarkSetError(
        f"landmarks of shape {shape} are of no landmark set: expected (..., 68, 2) for {IBUG68} or (..., 72, 2) "
        f"for {IBUG68_IRIS}"
    )


def require_same_set(what: str, have: str, needs_what: str, needs: str) -> None:
    """One line naming both sets when ``have`` (of ``what``) is not ``needs`` (of ``needs_what``)."""
    if have != needs:
        raise LandmarkSetError(
            f"{what} uses landmark set {have} but {needs_what} uses {needs}: they must match (see the landmark "
            f"sets in docs/landmarks.md)"
        )


def with_irises(points68: np.ndarray, centres: np.ndarray, radii: np.ndarray, present: np.ndarray) -> np.ndarray:
    """An ``ibug68+iris`` array from 68 points and per-eye irises (e.g. an iris locator's output).

    Args:
        points68: ``(..., 68, 2)`` pixels.
        centres: ``(..., 2, 2)`` iris centres (x, y), right eye (36-41) first.
        radii: ``(..., 2)`` iris radii in pixels.
        present: ``(..., 2)`` bool; an absent iris becomes NaN rows.

    Returns:
        float32 ``(..., 72, 2)``; the rim point lies straight above the centre (``y - r``).
    """
    p = np.asarray(points68, dtype=np.float32)
    c = np.asarray(centres, dtype=np.float32)
    r = np.asarray(radii, dtype=np.float32)
    ok = np.asarray(present, dtype=bool)
    if p.shape[-2:] != (68, 2) or c.shape != p.shape[:-2] + (2, 2) or r.shape != p.shape[:-2] + (2,) \
            or ok.shape != r.shape:
        raise LandmarkSetError(
            f"with_irises needs points (..., 68, 2), centres (..., 2, 2), radii and present (..., 2); got "
            f"{p.shape}, {c.shape}, {r.shape}, {ok.shape}"
        )
    rim = c - np.stack([np.zeros_like(r), r], axis=-1)
    iris = np.stack([c[..., 0, :], rim[..., 0, :], c[..., 1, :], rim[..., 1, :]], axis=-2)
    absent = np.repeat(~ok, 2, axis=-1)
    iris[absent] = np.nan
    return np.concatenate([p, iris], axis=-2)


def _iris_rows(points: np.ndarray) -> np.ndarray:
    p = np.asarray(points, dtype=np.float64)
    if p.shape[-2:] != (72, 2):
        raise LandmarkSetError(f"expected {IBUG68_IRIS} landmarks (..., 72, 2), got shape {p.shape}")
    return p[..., 68:72, :].reshape(p.shape[:-2] + (2, 2, 2))  # (..., eye, centre/rim, xy)


def iris_centres(points: np.ndarray) -> np.ndarray:
    """``(..., 72, 2)`` -> ``(..., 2, 2)`` iris centres (NaN where absent), right eye first."""
    return _iris_rows(points)[..., 0, :]


def iris_radii(points: np.ndarray) -> np.ndarray:
    """``(..., 72, 2)`` -> ``(..., 2)`` iris radii in pixels (NaN where absent)."""
    rows = _iris_rows(points)
    return np.linalg.norm(rows[..., 1, :] - rows[..., 0, :], axis=-1)


def iris_present(points: np.ndarray) -> np.ndarray:
    """``(..., 72, 2)`` -> ``(..., 2)`` bool: the iris is there (finite)."""
    return np.isfinite(_iris_rows(points)).all(axis=(-1, -2))


def iris_rows_valid(points: np.ndarray) -> np.ndarray:
    """``(..., 72, 2)`` -> ``(..., 2)`` bool: each eye's two iris rows follow the rule, all finite (there) or all NaN
    (absent); a half-NaN iris or an infinite one breaks it."""
    rows = _iris_rows(points)
    return np.isfinite(rows).all(axis=(-1, -2)) | np.isnan(rows).all(axis=(-1, -2))


def count_absent(points: np.ndarray) -> int:
    """Frames of ``(N, 72, 2)`` points with an eye's iris absent."""
    return int((~iris_present(points).all(-1)).sum())


def landmarks_68(points: np.ndarray) -> np.ndarray:
    """The 68 iBUG points of an array of either set."""
    set_of_points(points)
    return np.asarray(points)[..., :68, :]


def absent_note(points: np.ndarray, what: str) -> str | None:
    """A note like ``iris absent in 12/300 frames of clip.mp4`` for ``ibug68+iris`` points ``(N, 72, 2)`` (a
    frame counts when either eye's iris is absent); None when every iris is there or the points have no irises."""
    p = np.asarray(points)
    if p.ndim != 3 or p.shape[1:] != (72, 2) or not len(p):
        return None
    absent = count_absent(p)
    return f"iris absent in {absent}/{len(p)} frames of {what} (closed eyes, or none found)" if absent else None
