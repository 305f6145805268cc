"""Eye geometry on landmarks: eye-normalised iris positions (gaze) and eye opening, one rule for every user.

*Eye-normalised coordinates* of a point: its place relative to the eye's two corners (points 36 and 39 for the
right eye, 42 and 45 for the left; ``talkinghead.landmarks.sets.EYE_POINTS``), with the corners' midpoint at the
origin, the x axis from the outer corner (36 / 42, the image-left one) to the other, and lengths divided by the
corner-to-corner distance (the eye width).  The similarity that maps image pixels there is exact for any head
position, size and roll (it is computed as one complex division), so an iris at ``(0.1, 0.0)`` looks a tenth of an eye width towards the image right in
every face.  Gaze metrics (``talkinghead.metrics.eyes``) and gaze adaptation (``talkinghead.landmarks.adapt``) both
use it.

*Eye opening* is the eye aspect ratio (EAR, Soukupová & Čech 2016): the two lid gaps (37-41, 38-40) over twice the
eye width, per eye, on the 68 points.
"""

from __future__ import annotations

import numpy as np

from talkinghead.landmarks.sets import EYE_POINTS, iris_centres

__all__ = ["CORNERS", "to_eye", "from_eye", "gaze", "eye_aspect_ratio", "eye_openness"]

#: eye -> (outer corner, other corner) indices: the two ends of the eye-normalised x axis
CORNERS: dict[str, tuple[int, int]] = {eye: (pts[0], pts[3]) for eye, pts in EYE_POINTS.items()}


def _frame(points: np.ndarray, eye: str) -> tuple[np.ndarray, np.ndarray]:
    """(..., P, 2) points -> the eye's midpoint (..., complex) and corner vector (..., complex): pixel
    ``z = mid + vec * w`` for eye-normalised ``w = u + iv``."""
    a, b = CORNERS[eye]
    p = np.asarray(points, dtype=np.float64)
    za, zb = p[..., a, 0] + 1j * p[..., a, 1], p[..., b, 0] + 1j * p[..., b, 1]
    return (za + zb) / 2, zb - za


def to_eye(points: np.ndarray, xy: np.ndarray, eye: str) -> np.ndarray:
    """Pixels ``xy`` (..., 2) -> eye-normalised coordinates in ``eye`` of the frames ``points`` (..., P, 2)."""
    mid, vec = _frame(points, eye)
    q = np.asarray(xy, dtype=np.float64)
    w = (q[..., 0] + 1j * q[..., 1] - mid) / np.where(np.abs(vec) > 1e-9, vec, 1e-9)
    return np.stack([w.real, w.imag], axis=-1)


def from_eye(points: np.ndarray, uv: np.ndarray, eye: str) -> np.ndarray:
    """Eye-normalised ``uv`` (..., 2) -> pixels in ``eye`` of the frames ``points`` (..., P, 2)."""
    mid, vec = _frame(points, eye)
    w = np.asarray(uv, dtype=np.float64)
    z = mid + vec * (w[..., 0] + 1j * w[..., 1])
    return np.stack([z.real, z.imag], axis=-1)


def gaze(points: np.ndarray) -> np.ndarray:
    """Iris centres in eye-normalised coordinates: ``(N, 72, 2)`` -> ``(N, 2, 2)`` (eye: right, left; NaN: absent)."""
    p = np.asarray(points, dtype=np.float64)
    centres = iris_centres(p)
    return np.stack([to_eye(p, centres[..., e, :], eye) for e, eye in enumerate(EYE_POINTS)], axis=-2)


def eye_openness(eyes: np.ndarray) -> np.ndarray:
    """EAR of eye contours ``(..., 6, 2)`` (outer corner, two upper lid points, inner corner, two lower) ->
    ``(...)``: the two lid gaps over twice the corner-to-corner width; 0 for a shut eye."""
    e = np.asarray(eyes, dtype=np.float64)
    lids = np.linalg.norm(e[..., 1, :] - e[..., 5, :], axis=-1) + np.linalg.norm(e[..., 2, :] - e[..., 4, :], axis=-1)
    return lids / (2.0 * np.maximum(np.linalg.norm(e[..., 3, :] - e[..., 0, :], axis=-1), 1e-9))


def eye_aspect_ratio(points: np.ndarray) -> np.ndarray:
    """Eye opening per frame and eye: ``(N, 68 or 72, 2)`` -> ``(N, 2)`` EAR (about 0.3 for open human eyes, 0.6 for the synthetic heads; ~0 closed)."""
    p = np.asarray(points, dtype=np.float64)
    return np.stack([eye_openness(p[:, list(idx)]) for idx in EYE_POINTS.values()], axis=-1)
