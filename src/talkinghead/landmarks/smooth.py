"""Steady driver landmarks: a One-Euro filter over time, and the jitter measure it is judged by.

Per-frame landmarks jitter by a pixel or two from frame to frame even on a still face, and the rendered avatar
shimmers with them.  ``smooth_landmarks`` runs the One-Euro filter (Casiez, Roussel & Vogel, CHI 2012; the
``OneEuroFilter`` package by its authors) on each of the 136 coordinates: a low-pass whose cutoff rises with the
speed of the signal, so a still face is smoothed hard and a moving head is followed with little lag.  Coordinates
are filtered in face units (divided by the clip's median landmark-box size) so that the parameters do not depend
on the crop size.

``jitter`` is the mean frame-to-frame motion of the 68 points that is NOT explained by the head's motion: for each
pair of consecutive frames the best 2-D similarity (rotation, scale, shift: the head's rigid motion in the image)
is fitted and removed, and the mean remaining point displacement is averaged over the clip.
"""

from __future__ import annotations

import numpy as np

SMOOTH_MODES = ("on", "off")
#: One-Euro parameters for landmarks in face units (1 = the face's landmark-box size), chosen on voxmini and on
#: synthetic heads (tests/test_smooth.py states what they buy: jitter halved, lag on a fast turn <= 1 frame)
MIN_CUTOFF_HZ = 1.0
BETA = 5.0
D_CUTOFF_HZ = 1.0


def face_scale(points: np.ndarray) -> float:
    """Median over frames of sqrt(width * height) of the landmark box; ``points`` (N, 68, 2)."""
    p = np.asarray(points, dtype=np.float64)
    w = p[..., 0].max(-1) - p[..., 0].min(-1)
    h = p[..., 1].max(-1) - p[..., 1].min(-1)
    return float(np.median(np.sqrt(np.maximum(w * h, 1e-12))))


class LandmarkSmoother:
    """The One-Euro filter of :func:`smooth_landmarks` in online form: one (68, 2) frame at a time, in order.

    ``scale``: the face's size in pixels (:func:`face_scale`; coordinates are filtered in face units).
    ``__call__(points, timestamp)``: ``points`` (68, 2) -> float32 (68, 2); ``timestamp`` in seconds (None: frames
    come at ``fps``) lets a live camera's uneven frame times set the filter's rate.  Causal: frame t depends on
    frames <= t only.
    """

    def __init__(
        self,
        fps: float,
        scale: float,
        min_cutoff: float = MIN_CUTOFF_HZ,
        beta: float = BETA,
        d_cutoff: float = D_CUTOFF_HZ,
        points: int = 68,
    ) -> None:
        from OneEuroFilter import OneEuroFilter

        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.shape = (int(points), 2)
        self.filters = [OneEuroFilter(fps, min_cutoff, beta, d_cutoff) for _ in range(2 * int(points))]

    def __call__(self, points: np.ndarray, timestamp: float | None = None) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        if p.shape != self.shape:
            raise ValueError(f"points must be {self.shape}, got {p.shape}")
        row = (p / self.scale).reshape(-1)
        out = np.array([f(float(v), timestamp) for f, v in zip(self.filters, row)], dtype=np.float64)
        return (out.reshape(self.shape) * self.scale).astype(np.float32)


def smooth_landmarks(
    points: np.ndarray,
    fps: float,
    min_cutoff: float = MIN_CUTOFF_HZ,
    beta: float = BETA,
    d_cutoff: float = D_CUTOFF_HZ,
) -> np.ndarray:
    """One-Euro filter each coordinate of ``points`` (N, 68, 2) over time at ``fps``; returns float32 (N, 68, 2).

    ``min_cutoff`` (Hz): cutoff of a still signal (lower = steadier); ``beta``: how fast the cutoff rises with
    speed (in face units per second; higher = less lag).  Causal: frame t depends on frames <= t only
    (:class:`LandmarkSmoother` frame by frame, scaled by the clip's :func:`face_scale`).
    ``ibug68+iris`` points (N, 72, 2): the 68 are smoothed, the irises pass as they are (gaze jumps in saccades,
    and a closed eye's iris is NaN, which a filter would carry into the following frames).
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 3 or p.shape[-1] != 2:
        raise ValueError(f"points must be (N, 68, 2), got {p.shape}")
    if p.shape[1] == 72:
        out = p.astype(np.float32)
        out[:, :68] = smooth_landmarks(p[:, :68], fps, min_cutoff, beta, d_cutoff)
        return out
    if len(p) < 2:
        return p.astype(np.float32)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    smoother = LandmarkSmoother(fps, face_scale(p), min_cutoff, beta, d_cutoff, points=p.shape[1])
    return np.stack([smoother(frame) for frame in p]).astype(np.float32)


def remove_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Residual ``dst - S(src)`` of the least-squares 2-D similarity S mapping (68, 2) ``src`` onto ``dst``."""
    a = src[:, 0] + 1j * src[:, 1]
    b = dst[:, 0] + 1j * dst[:, 1]
    ac, bc = a - a.mean(), b - b.mean()
    k = (np.conj(ac) * bc).sum() / max(float((np.abs(ac) ** 2).sum()), 1e-12)  # rotation * scale
    r = bc - k * ac
    return np.stack([r.real, r.imag], axis=-1)


def jitter(points: np.ndarray) -> float:
    """Mean frame-to-frame motion of the 68 points after removing the head's similarity motion (pixels)."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) < 2:
        return 0.0
    return float(np.mean([np.linalg.norm(remove_similarity(p[t - 1], p[t]), axis=1).mean()
                          for t in range(1, len(p))]))
