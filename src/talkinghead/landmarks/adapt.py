"""Landmark adaptation: drive an avatar with another person's motion but keep the avatar's face shape.

The paper (Sec. 5) names the weakness of driving an avatar with raw landmarks of another person: the
landmarks carry that person's face geometry (jaw width, eye spacing, nose length, ...) into the avatar, so the
avatar's identity drifts towards the driver's.  Adaptation transfers only *relative* motion:

1. ``A``: the similarity transform (scale, rotation, translation; Umeyama 1991) that best maps the driver's
   reference landmarks ``d_ref`` (its first or most neutral frame) onto the avatar's reference landmarks
   ``a_ref`` (a frame of the fine-tuning set).
2. For each driver frame ``d_t``: ``M_t``, the similarity that maps ``d_ref`` onto ``d_t`` fitted on the
   *rigid* points (nose, eye corners, upper jaw) -- the head's pose change -- and the non-rigid residual
   ``delta_t = M_t^-1(d_t) - d_ref`` -- the expression change, in the reference frame's coordinates.
3. The avatar's landmarks: ``a_t = (A M_t A^-1)(a_ref + sR delta_t)``, with ``sR`` the linear part of ``A``:
   the avatar's own face, deformed by the driver's expression change (rescaled to the avatar's face size and
   rotated into its frame), then moved by the driver's head motion expressed in the avatar's image.

If the driver *is* the avatar's face (``d_ref = A^-1(a_ref)``), ``a_t = A(d_t)``: adaptation changes nothing but
the placement.  With ``d_t = d_ref``, ``a_t = a_ref``.

Gaze (``ibug68+iris`` points, ``talkinghead.landmarks.sets``): after the 68 points, each iris (centre and rim point)
keeps its place relative to its eye: its eye-normalised coordinates in the driver's eye (``talkinghead.landmarks.eyes``:
relative to the eye corners, in eye widths) become the same coordinates in the avatar's adapted eye.  So the
avatar looks where the driver looks, whatever the two eyes' shapes, and the iris keeps the driver's size relative
to the eye.  An absent iris (closed eye, NaN) stays absent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from talkinghead.landmarks.eyes import from_eye, to_eye
from talkinghead.landmarks.sets import IRIS_ROWS

__all__ = [
    "adapt_irises",
    "RIGID_POINTS",
    "Similarity",
    "fit_similarity",
    "adapt_landmarks",
    "neutral_index",
    "should_adapt",
    "ADAPT_MODES",
]

#: iBUG-68 points that expressions barely move: upper jaw (0, 1, 15, 16), nose bridge and base (27-35),
#: eye corners (36, 39, 42, 45).  The head's rigid motion is fitted on them.
RIGID_POINTS: tuple[int, ...] = (0, 1, 15, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)

#: ``adapt`` values (``make reenact ADAPT=``, ``--adapt``): ``auto`` adapts when driver and avatar are different (or unknown) people.
ADAPT_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class Similarity:
    """``p -> s R p + t`` on row vectors: ``scale`` s, ``rotation`` R (2, 2), ``translation`` t (2,)."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    @property
    def linear(self) -> np.ndarray:
        """``s R`` (2, 2)."""
        return self.scale * self.rotation

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) -> (..., 2)."""
        return points @ self.linear.T + self.translation

    def inverse(self) -> Similarity:
        r_inv = self.rotation.T
        return Similarity(1.0 / self.scale, r_inv, -(self.translation @ r_inv.T) / self.scale)

    def compose(self, inner: Similarity) -> Similarity:
        """``self ∘ inner``: first ``inner``, then ``self``."""
        return Similarity(self.scale * inner.scale, self.rotation @ inner.rotation, self(inner.translation))


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> Similarity:
    """Least-squares similarity with ``dst ≈ s R src + t`` (Umeyama's closed form, no reflection).

    ``src``, ``dst``: (N, 2) corresponding points, N >= 2, ``src`` not all equal.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(
            f"fit_similarity needs two (N, 2) arrays with N >= 2, got {src.shape} and {dst.shape}"
        )
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("fit_similarity: the source points are all the same point")
    cov = xd.T @ xs / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = u @ np.diag(d) @ vt
    scale = float((sig * d).sum() / var_s)
    return Similarity(scale, rot, mu_d - scale * (rot @ mu_s))


def adapt_landmarks(
    driver: np.ndarray,
    avatar_ref: np.ndarray,
    driver_ref: np.ndarray | None = None,
    rigid: tuple[int, ...] = RIGID_POINTS,
) -> np.ndarray:
    """The driver's pose and expression changes applied to the avatar's face (see the module docstring).

    Args:
        driver: (N, 68, 2) driver landmarks, pixels of the avatar's image; (N, 72, 2) with irises: their gaze moves
            into the avatar's eyes (:func:`adapt_irises`).
        avatar_ref: (68, 2) the avatar's reference landmarks (of either set: its 68 points are used).
        driver_ref: (68, 2) the driver's reference landmarks (default: ``driver[0]``; of either set).
        rigid: point indices the per-frame head motion is fitted on.

    Returns:
        (N, 68, 2) (or (N, 72, 2), as ``driver``) float32 landmarks with the avatar's face shape.
    """
    full = np.asarray(driver, dtype=np.float64)
    if full.ndim != 3 or full.shape[1:] not in ((68, 2), (72, 2)):
        raise ValueError(f"driver landmarks must be (N, 68, 2) or (N, 72, 2), got {full.shape}")
    driver = full[:, :68]
    a_ref = np.asarray(avatar_ref, dtype=np.float64)
    if a_ref.shape not in ((68, 2), (72, 2)):
        raise ValueError(f"avatar reference landmarks must be (68, 2), got {a_ref.shape}")
    a_ref = a_ref[:68]
    d_ref = driver[0] if driver_ref is None else np.asarray(driver_ref, dtype=np.float64)[:68]
    idx = np.asarray(rigid)
    to_avatar = fit_similarity(d_ref, a_ref)  # A
    from_avatar = to_avatar.inverse()
    out = np.empty_like(driver)
    for t, d_t in enumerate(driver):
        motion = fit_similarity(d_ref[idx], d_t[idx])  # M_t
        delta = motion.inverse()(d_t) - d_ref  # expression change, reference coordinates
        shaped = a_ref + delta @ to_avatar.linear.T  # avatar face with the expression change
        out[t] = to_avatar.compose(motion).compose(from_avatar)(shaped)  # A M_t A^-1
    if full.shape[1] == 72:
        return adapt_irises(full, out)
    return out.astype(np.float32)


def adapt_irises(driver: np.ndarray, adapted: np.ndarray) -> np.ndarray:
    """The driver's irises moved into the adapted eyes: same eye-normalised place (see the module docstring).

    Args:
        driver: (N, 72, 2) driver landmarks with irises (NaN rows: absent).
        adapted: (N, 68 or 72, 2) the avatar's adapted landmarks (only its 68 points are read).

    Returns:
        (N, 72, 2) float32: ``adapted``'s 68 points and the irises.
    """
    d = np.asarray(driver, dtype=np.float64)
    a = np.asarray(adapted, dtype=np.float64)[:, :68]
    irises = []
    for eye, rows in IRIS_ROWS.items():
        uv = to_eye(d[:, None], d[:, list(rows)], eye)  # (N, 2 rows, 2)
        irises.append(from_eye(a[:, None], uv, eye))
    return np.concatenate([a, *irises], axis=1).astype(np.float32)


def _mouth_opening(points: np.ndarray) -> float:
    """Inner-lip gap (62 <-> 66) over the inter-ocular distance (36 <-> 45): size-free mouth opening."""
    iod = np.linalg.norm(points[45] - points[36])
    return float(np.linalg.norm(points[66] - points[62]) / max(iod, 1e-6))


def _eye_opening(points: np.ndarray) -> float:
    iod = np.linalg.norm(points[45] - points[36])
    lids = np.linalg.norm(points[[37, 38, 43, 44]] - points[[41, 40, 47, 46]], axis=1).mean()
    return float(lids / max(iod, 1e-6))


def _off_frontal(points: np.ndarray) -> float:
    """How far a face is from upright and frontal: |roll| (radians, eye line) + |log| of the nose tip's distance
    ratio to the two jaw ends (0 when the head does not turn)."""
    eye = points[45] - points[36]
    roll = abs(float(np.arctan2(eye[1], eye[0])))
    left, right = np.linalg.norm(points[30] - points[0]), np.linalg.norm(points[30] - points[16])
    return roll + abs(float(np.log(max(left, 1e-6) / max(right, 1e-6))))


def neutral_index(landmarks: np.ndarray) -> int:
    """Index of the most neutral frame of (N, 68, 2) landmarks: upright and frontal, mouth closed, eyes open.

    Used as the avatar's reference frame (and the driver's with ``reference="neutral"``): relative motion is
    measured from it, so a turned or tilted reference would turn or tilt every adapted frame.
    """
    score = [_off_frontal(p) + _mouth_opening(p) - 0.5 * _eye_opening(p) for p in np.asarray(landmarks)]
    return int(np.argmin(score))


def should_adapt(mode: str, driver_person: str | None, avatar_person: str | None) -> bool:
    """``on``/``off`` as given; ``auto``: adapt unless driver and avatar are known to be the same person."""
    if mode not in ADAPT_MODES:
        raise ValueError(f"adapt must be one of {', '.join(ADAPT_MODES)}, got {mode!r}")
    if mode != "auto":
        return mode == "on"
    return not (driver_person and avatar_person and driver_person == avatar_person)
