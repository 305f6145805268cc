"""Iris centres from a frame and its iBUG-68 points: a dark-blob search inside each eye's lids, no learnt weights.

The 68 points give eyelids but no iris. For each eye (points 36-41, the image's left eye; 42-47, its right) the
eye region is resampled to a small upright patch (the eye's corners on a row, the eye ``PATCH_EYE_WIDTH`` patch
pixels wide; both patches side by side in one strip), the lids' polygon masks it, and the iris is the darkest
iris-sized blob inside the mask:

1. darkness ``d = (hi - gray) / (hi - lo)`` with ``lo``/``hi`` the 5th/95th percentiles of the gray levels inside
   the lids (so it does not depend on exposure or skin tone);
2. coarse centre: the argmax of the masked darkness blurred at the iris's scale (a Gaussian of sigma half the
   expected iris radius, ``IRIS_RADIUS_FRACTION`` = 0.21 eye widths: an adult iris is ~11.7 mm across, the eye
   ~30 mm), divided by the square root of the blurred mask, so a half-covered iris still scores;
3. refined centre: two mean-shift steps of the darkness inside a disc of the expected radius (sub-pixel);
4. radius: where the radial darkness profile around the centre falls a third of the way back from the pupil to
   the sclera, clamped to ``RADIUS_FRACTIONS``' range (a rough size: median error 17 % on the synthetic heads).

An eye is **absent** (never guessed) when its points are not finite, it is narrower than ``MIN_EYE_WIDTH`` pixels,
its eye aspect ratio (lid gap over width, Soukupova & Cech 2016) is below ``EAR_CLOSED``, its region leaves the
frame, the region has no contrast (``MIN_RANGE``: a black or flat crop), or no candidate disc is darker than the
ring around it by ``MIN_CONTRAST`` (blinks whose detected lids stay apart). Any failure inside the locator yields
absent; nothing raises out of :func:`locate_irises` for bad pixels or points (a frame that is not ``(H, W, 3)``
uint8 gives two absents too). Accuracy and speed: ``python -m talkinghead.tools.iris_accuracy``, docs/landmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from talkinghead.landmarks.eyes import eye_openness
from talkinghead.landmarks.sets import EYE_POINTS, with_irises

#: the eyes in the 68-point layout (0-based): the image's left eye (the person's right), then the image's right.
EYE_SLICES = tuple(slice(idx[0], idx[-1] + 1) for idx in EYE_POINTS.values())  # (36-41, 42-47)
#: eyes narrower than this (corner to corner, frame pixels) are absent: their iris is a few pixels across.
MIN_EYE_WIDTH = 12.0
#: eye aspect ratio ``(|p1-p5| + |p2-p4|) / (2 |p0-p3|)`` below which the eye counts as closed.
EAR_CLOSED = 0.17
#: the found disc must be darker than the ring around it by this fraction of the lids' gray range.
MIN_CONTRAST = 0.15
#: the eye's width in the patch (pixels); the patch is 1.5 widths wide and 1 width high.
PATCH_EYE_WIDTH = 32
#: the lids' gray range (5th to 95th percentile) below which the region is flat (black, blank): absent.
MIN_RANGE = 8.0
#: the expected iris radius as a fraction of the eye's corner-to-corner width.
IRIS_RADIUS_FRACTION = 0.21
#: candidate iris radii (fractions of the eye's width) of the presence test; the radius estimate lies between
#: the first and the last.
RADIUS_FRACTIONS = (0.15, 0.18, 0.21, 0.24, 0.27, 0.30)

_PW, _PH = (3 * PATCH_EYE_WIDTH) // 2, PATCH_EYE_WIDTH
_MID = ((_PW - 1) / 2.0, (_PH - 1) / 2.0)  # the eye's centre in the patch
#: patch coordinates shaped to broadcast against the ``(PH, n, PW)`` view of a strip of n patches
_LOCAL_X = np.arange(_PW, dtype=np.float32).reshape(1, 1, _PW)
_GRID_Y = np.arange(_PH, dtype=np.float32).reshape(_PH, 1, 1)


@dataclass(frozen=True)
class IrisResult:
    """Both irises of one frame: ``centres`` float32 (2, 2) pixel (x, y) (NaN where absent), ``radii`` float32
    (2,) pixels (NaN where absent), ``present`` bool (2,); eye 0 is points 36-41, eye 1 points 42-47."""

    centres: np.ndarray
    radii: np.ndarray
    present: np.ndarray


_R0 = IRIS_RADIUS_FRACTION * PATCH_EYE_WIDTH
_RADII = np.array(RADIUS_FRACTIONS) * PATCH_EYE_WIDTH
_SIGMA = _R0 / 2.0
_RIM = np.ones((3, 3), np.uint8)
_BINS_PER_PX = 2
_NBINS = int(np.ceil(0.5 * PATCH_EYE_WIDTH * _BINS_PER_PX)) + 2   # radial bins out to half the eye's width
#: bins of the iris's middle (a tenth of the eye's width) and of the sclera around it (0.3 to 0.45 of the width)
_MIDDLE_BINS = int(round(0.1 * PATCH_EYE_WIDTH * _BINS_PER_PX))
_AROUND = np.arange(int(0.3 * PATCH_EYE_WIDTH * _BINS_PER_PX), int(0.45 * PATCH_EYE_WIDTH * _BINS_PER_PX))
#: for each candidate radius r: the last radial bin inside r and inside 1.5 r (cumulative-sum indices)
_EDGES = np.stack([np.ceil(_RADII * _BINS_PER_PX) - 1, np.ceil(1.5 * _RADII * _BINS_PER_PX) - 1], 1).astype(int)
#: the blurred value of an all-ones patch at its middle: the coverage of a disc that lies wholly inside the lids
_COVER_FULL = float(cv2.GaussianBlur(np.ones((_PH, _PW), np.float32), (0, 0), _SIGMA,
                                     borderType=cv2.BORDER_CONSTANT)[_PH // 2, _PW // 2])


def _eye_ok(eyes: np.ndarray, h: int, w: int) -> np.ndarray:
    """Which of ``eyes`` (2, 6, 2) can show an iris by their points alone: finite, at least ``MIN_EYE_WIDTH``
    wide, open (eye aspect ratio >= ``EAR_CLOSED``) and inside the ``h x w`` frame. (2,) bool."""
    finite = np.isfinite(eyes).all(axis=(1, 2))
    e = np.where(finite[:, None, None], eyes, 0.0)
    width = np.linalg.norm(e[:, 3] - e[:, 0], axis=-1)
    ear = eye_openness(e)
    lo, hi = e.min(axis=1), e.max(axis=1)
    inside = (lo >= 0).all(axis=1) & (hi[:, 0] <= w - 1) & (hi[:, 1] <= h - 1)
    return finite & (width >= MIN_EYE_WIDTH) & (ear >= EAR_CLOSED) & inside


def _locate(frame: np.ndarray, eyes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres ``(n, 2)`` frame (x, y), radii ``(n,)`` frame pixels and found ``(n,)`` bool for ``eyes`` (n, 6, 2)
    that passed :func:`_eye_ok`. The n eye patches lie side by side in one ``(PH, n * PW)`` strip, so each OpenCV
    step is one call for all eyes and each per-eye reduction runs over the ``(PH, n, PW)`` view of the strip."""
    n = len(eyes)
    # frame -> patch: p = s R (x - centre) + mid; R turns the corner-to-corner axis onto +x
    axis = eyes[:, 3] - eyes[:, 0]
    width = np.sqrt((axis * axis).sum(1))
    cos, sin = axis[:, 0] / width, axis[:, 1] / width
    scale = PATCH_EYE_WIDTH / width
    centre = eyes.mean(1)
    # patch -> frame for the remap: x = centre + R^T (p - mid) / s
    u, v = _LOCAL_X - _MID[0], _GRID_Y - _MID[1]                               # (PH, 1, PW)
    a, b = (cos / scale)[None, :, None], (sin / scale)[None, :, None]
    map_x = (centre[:, 0][None, :, None] + a * u - b * v).astype(np.float32).reshape(_PH, n * _PW)
    map_y = (centre[:, 1][None, :, None] + b * u + a * v).astype(np.float32).reshape(_PH, n * _PW)
    rgb = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gray8 = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    gray = gray8.astype(np.float32)
    # the lids' polygon in strip pixels
    q = eyes - centre[:, None]
    lids_x = (scale[:, None] * (cos[:, None] * q[..., 0] + sin[:, None] * q[..., 1]) + _MID[0]
              + (np.arange(n) * _PW)[:, None])
    lids_y = scale[:, None] * (-sin[:, None] * q[..., 0] + cos[:, None] * q[..., 1]) + _MID[1]
    mask8 = np.zeros((_PH, n * _PW), np.uint8)
    cv2.fillPoly(mask8, list(np.rint(np.stack([lids_x, lids_y], -1) * 16).astype(np.int32)), 1, cv2.LINE_8, 4)
    m = mask8.astype(bool)
    m3 = m.reshape(_PH, n, _PW)
    count = m3.sum(axis=(0, 2))
    # darkness relative to the 5th..95th percentile of the gray levels inside the lids
    levels = (gray8.reshape(_PH, n, _PW).astype(np.int64) + (np.arange(n) * 256)[None, :, None])[m3]
    cum = np.bincount(levels, minlength=n * 256).reshape(n, 256).cumsum(1)                      # (n, 256)
    k = np.maximum(count - 1, 0)
    lo = (cum <= (0.05 * k).astype(int)[:, None]).sum(1).astype(np.float32)   # the level of rank 5 % (and 95 %)
    hi = (cum <= (0.95 * k).astype(int)[:, None]).sum(1).astype(np.float32)
    rng = np.maximum(hi - lo, 1e-3)
    dark = np.clip((np.repeat(hi, _PW)[None] - gray) / np.repeat(rng, _PW)[None], 0.0, 1.0) * m      # (PH, n*PW)
    # coarse: the darkest iris-sized blob, normalised by how much of it the lids cover (a half-covered iris scores)
    both = cv2.GaussianBlur(np.dstack([dark, mask8.astype(np.float32)]), (0, 0), _SIGMA, borderType=cv2.BORDER_CONSTANT)
    num, cover = both[..., 0], np.maximum(both[..., 1], 1e-4)
    score = np.where(m, num / np.sqrt(cover * _COVER_FULL), -1.0).reshape(_PH, n, _PW)
    best = score.transpose(1, 0, 2).reshape(n, -1).argmax(axis=1)
    x, y = (best % _PW).astype(np.float64), (best // _PW).astype(np.float64)
    # refine: two mean-shift steps of the darkness inside the expected iris disc
    dark3 = dark.reshape(_PH, n, _PW)
    for _ in range(2):
        wgt = dark3 * (((_LOCAL_X - x[None, :, None]) ** 2 + (_GRID_Y - y[None, :, None]) ** 2) <= _R0**2)
        cols, rows = wgt.sum(axis=0), wgt.sum(axis=2)                                          # (n, PW), (PH, n)
        tot = np.maximum(cols.sum(axis=1), 1e-9)
        x, y = cols @ _LOCAL_X[0, 0] / tot, _GRID_Y[:, 0, 0] @ rows / tot
    # presence: some candidate disc is darker than the ring (r, 1.5 r] around it, from radial histograms taken
    # inside the lids less a rim (lashes and the lid's shadow are dark whatever the eye does)
    d = np.sqrt((_LOCAL_X - x[None, :, None]) ** 2 + (_GRID_Y - y[None, :, None]) ** 2)         # (PH, n, PW)
    core = cv2.erode(mask8, _RIM).astype(bool).reshape(_PH, n, _PW)
    bins = (np.minimum((d * _BINS_PER_PX).astype(np.int64), _NBINS - 1) + (np.arange(n) * _NBINS)[None, :, None])[core]
    cnt = np.bincount(bins, minlength=n * _NBINS).reshape(n, _NBINS).astype(np.float64)          # (n, bins)
    ink = np.bincount(bins, weights=dark3[core], minlength=n * _NBINS).reshape(n, _NBINS)
    area, inked = cnt.cumsum(1)[:, _EDGES], ink.cumsum(1)[:, _EDGES]                              # (n, R, 2)
    n_in, n_ring = area[..., 0], area[..., 1] - area[..., 0]
    contrast = inked[..., 0] / np.maximum(n_in, 1) - (inked[..., 1] - inked[..., 0]) / np.maximum(n_ring, 1)
    contrast = np.where((n_in >= 3) & (n_ring >= 3), contrast, -np.inf)                           # (n, R)
    found = (count >= 8) & (hi - lo >= MIN_RANGE) & (contrast.max(axis=1) >= MIN_CONTRAST)
    # radius: where the radial darkness profile first falls two thirds of the way from the middle (the pupil) to
    # the sclera around it (a light iris is darker than that third, so the edge found is the iris's, not the pupil's)
    profile = ink / np.maximum(cnt, 1)
    middle = ink[:, :_MIDDLE_BINS].sum(1) / np.maximum(cnt[:, :_MIDDLE_BINS].sum(1), 1)
    around = np.where(cnt[:, _AROUND] > 0, profile[:, _AROUND], np.inf).min(axis=1)
    around = np.where(np.isfinite(around), around, 0.0)
    half = around + (middle - around) / 3.0
    below = (profile < half[:, None]) & (cnt > 0) & (np.arange(_NBINS) >= _MIDDLE_BINS)[None]
    edge = np.where(below.any(1), below.argmax(1), _R0 * _BINS_PER_PX)
    radius = np.clip(edge / _BINS_PER_PX, _RADII[0], _RADII[-1])
    # patch -> frame
    pu, pv = (x - _MID[0]) / scale, (y - _MID[1]) / scale
    centres = np.stack([centre[:, 0] + cos * pu - sin * pv, centre[:, 1] + sin * pu + cos * pv], 1)
    return centres, radius / scale, found & np.isfinite(centres).all(1)


def locate_irises(frame_rgb: np.ndarray, points68: np.ndarray) -> IrisResult:
    """Iris centres and radii of both eyes of ``frame_rgb`` uint8 ``(H, W, 3)`` given its ``points68`` ``(68, 2)``
    pixel (x, y). Never raises for bad pixels or points: such an eye is absent (see the module's docstring)."""
    centres = np.full((2, 2), np.nan, np.float32)
    radii = np.full(2, np.nan, np.float32)
    present = np.zeros(2, bool)
    try:
        frame = np.asarray(frame_rgb)
        pts = np.asarray(points68, dtype=np.float64)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8 or pts.shape != (68, 2):
            return IrisResult(centres, radii, present)
        eyes = np.stack([pts[s] for s in EYE_SLICES])
        ok = _eye_ok(eyes, *frame.shape[:2])
        if ok.any():
            c, r, found = _locate(np.ascontiguousarray(frame), eyes[ok])
            idx = np.flatnonzero(ok)[found]
            centres[idx], radii[idx], present[idx] = c[found], r[found], True
    except Exception:  # noqa: BLE001 - a failure inside the locator is an absent eye, never an exception
        return IrisResult(np.full((2, 2), np.nan, np.float32), np.full(2, np.nan, np.float32), np.zeros(2, bool))
    return IrisResult(centres, radii, present)


def inter_ocular_distance(points68: np.ndarray) -> float:
    """Distance between the two eyes' centres (the means of points 36-41 and 42-47): the unit of the locator's
    error figures."""
    pts = np.asarray(points68, dtype=np.float64)
    return float(np.linalg.norm(pts[EYE_SLICES[0]].mean(0) - pts[EYE_SLICES[1]].mean(0)))


def points_with_irises(frame_rgb: np.ndarray, points68: np.ndarray) -> np.ndarray:
    """The ``ibug68+iris`` points of one frame: its ``points68`` ``(68, 2)`` and the irises :func:`locate_irises`
    finds in ``frame_rgb`` -> float32 ``(72, 2)`` in the same pixels, NaN rows where an iris is absent (never
    guessed).  What the tracker, live driving and preprocessing add to the 68 points of a real frame."""
    r = locate_irises(frame_rgb, points68)
    return with_irises(np.asarray(points68, np.float32), r.centres, r.radii, r.present)


def points_with_irises_scored(frame_rgb: np.ndarray, points68: np.ndarray, eye_width: float = 2 * MIN_EYE_WIDTH,
                              max_factor: int = 4) -> np.ndarray:
    """:func:`points_with_irises` for scoring small outputs (the eye metrics of ``make evaluate``): a frame whose
    eyes are narrower than ``eye_width`` pixels is enlarged (bicubic, at most ``max_factor`` times) before the
    locator runs, so a 64-pixel face is scored rather than absent.  Enlarging adds no detail: on 64-pixel
    procedural heads the located gaze is about 0.09 eye widths from the same gaze located on another face
    (docs/landmarks.md)."""
    pts = np.asarray(points68, dtype=np.float64)[:68]
    widths = [np.linalg.norm(pts[idx[3]] - pts[idx[0]]) for idx in EYE_POINTS.values()]
    width = min(widths) if np.isfinite(widths).all() else eye_width
    factor = int(min(max_factor, np.ceil(eye_width / max(width, 1e-6))))
    if factor <= 1:
        return points_with_irises(frame_rgb, pts)
    frame = np.ascontiguousarray(frame_rgb)
    big = cv2.resize(frame, (frame.shape[1] * factor, frame.shape[0] * factor), interpolation=cv2.INTER_CUBIC)
    # pixel centres: x_big + 0.5 = factor * (x + 0.5)
    out = points_with_irises(big, (pts + 0.5) * factor - 0.5)
    return ((out + 0.5) / factor - 0.5).astype(np.float32)
