"""Steady driver landmarks: a One-Euro filter over time, and the jitter measure it is judged by.

Per-frame landmarks jitter by a pixel or two from frame to frame even on a still face, and the rendered avatar
shimmers with them.  ``smooth_landmarks`` runs the One-Euro filter (Casiez, Roussel & Vogel, CHI 2012; the
``OneEuroFilter`` package by its authors) on each of the 136 coordinates: a low-pass whose cutoff rises with the
speed of the signal, so a still face is smoothed hard and a moving head is followed with little lag.  Coordinates
are filtered in face units (divided by the clip's median landmark-box size) so that the parameters do not depend
on the crop size.

``ibug68+iris`` points (72 per frame) smooth their iris rows with a filter of their own (``IRIS_*``: a higher
cutoff and beta, so a saccade is followed within a frame or two and the iris does not lag behind the lids), and
an absent iris (NaN, a blink) stays NaN and restarts its filter: a blink is never bridged or smeared.

``jitter`` is the mean frame-to-frame motion of the 68 points that is NOT explained by the head's motion: for each
pair of consecutive frames the best 2-D similarity (rotation, scale, shift: the head's rigid motion in the image)
is fitted and removed, and the mean remaining point displacement is averaged over the clip.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SMOOTH_MODES = ("on", "off")
#: One-Euro parameters for landmarks in face units (1 = the face's landmark-box size), chosen on voxmini and on
#: synthetic heads (tests/test_smooth.py states what they buy: jitter halved, lag on a fast turn <= 1 frame)
MIN_CUTOFF_HZ = 1.0
BETA = 5.0
D_CUTOFF_HZ = 1.0
#: One-Euro parameters of the iris rows (68-71) of ``ibug68+iris`` points: gaze jumps in saccades (a third of the
#: eye's width in one frame), so the cutoff rises fast; tests/test_smooth.py states what they buy
IRIS_MIN_CUTOFF_HZ = 2.0
IRIS_BETA = 50.0
IRIS_D_CUTOFF_HZ = 5.0


def face_scale(points: np.ndarray) -> float:
    """Median over frames of sqrt(width * height) of the landmark box of the 68 points; ``points`` (N, 68|72, 2)."""
    p = np.asarray(points, dtype=np.float64)[:, :68]
    w = p[..., 0].max(-1) - p[..., 0].min(-1)
    h = p[..., 1].max(-1) - p[..., 1].min(-1)
    return float(np.median(np.sqrt(np.maximum(w * h, 1e-12))))


class LandmarkSmoother:
    """The One-Euro filter of :func:`smooth_landmarks` in online form: one (P, 2) frame at a time, in order.

    ``scale``: the face's size in pixels (:func:`face_scale`; coordinates are filtered in face units).
    ``__call__(points, timestamp)``: ``points`` (P, 2) -> float32 (P, 2); ``timestamp`` in seconds (None: frames
    come at ``fps``) lets a live camera's uneven frame times set the filter's rate.  Causal: frame t depends on
    frames <= t only.  ``points=72`` (``ibug68+iris``): rows 68-71 use the ``IRIS_*`` parameters; a NaN coordinate
    (an absent iris) comes out NaN and restarts its filter.
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
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.fps = float(fps)
        self.scale = float(scale)
        self.shape = (int(points), 2)
        #: per coordinate: its One-Euro parameters (the 68 points', or the irises' for rows 68 and up)
        self.params = [(min_cutoff, beta, d_cutoff) if row < 68 else (IRIS_MIN_CUTOFF_HZ, IRIS_BETA, IRIS_D_CUTOFF_HZ)
                       for row in range(int(points)) for _ in range(2)]
        self.filters: list[Any] = [self._fresh(i) for i in range(len(self.params))]  # None: absent now

    def _fresh(self, i: int) -> Any:
        from OneEuroFilter import OneEuroFilter

        return OneEuroFilter(self.fps, *self.params[i])

    def __call__(self, points: np.ndarray, timestamp: float | None = None) -> np.ndarray:
        p = np.asarray(points, dtype=np.float64)
        if p.shape != self.shape:
            raise ValueError(f"points must be {self.shape}, got {p.shape}")
        row = (p / self.scale).reshape(-1)
        finite = np.isfinite(row)
        out = np.full_like(row, np.nan)  # absent (a closed eye): no value
        for i in np.flatnonzero(finite):
            if self.filters[i] is None:  # back after an absence: its filter starts afresh
                self.filters[i] = self._fresh(i)
            out[i] = self.filters[i](float(row[i]), timestamp)
        for i in np.flatnonzero(~finite):
            self.filters[i] = None
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
    ``ibug68+iris`` points (N, 72, 2): the irises with their own parameters, NaN (absent) kept and restarting
    their filter (:class:`LandmarkSmoother`); the face scale comes from the 68.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 3 or p.shape[-1] != 2:
        raise ValueError(f"points must be (N, 68, 2), got {p.shape}")
    if len(p) < 2:
        return p.astype(np.float32)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    smoother = LandmarkSmoother(fps, face_scale(p[:, :68]), min_cutoff, beta, d_cutoff, points=p.shape[1])
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
