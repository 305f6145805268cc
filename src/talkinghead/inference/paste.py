"""Full-frame output: the rendered face crop pasted back into the avatar's own source frame.

The avatar's face crop was cut from its source frame (the photo, or the first source frame of a video) by
``talkinghead.crop.crop_frame``: the square box ``(x0, y0, side)`` (integer pixels, padded black where it
leaves the image) resized to S x S.  Paste-back inverts that, frame by frame, with the box fixed (the avatar's
box: it never follows the driver's head, so the face does not jump):

1. :func:`face_mask` -- a soft mask in crop pixels: the convex hull of the face's landmarks (the source frame's
   face and the rendered one, so neither shows through the other; the hull is raised a little above the brows
   to take in the forehead), grown, then feathered with a Gaussian; it falls to 0 before the crop's border, and
   values under 1/255 are 0 (outside the mask the output IS the source frame, bit for bit).
2. :func:`crop_to_frame` -- the inverse crop warp: the S x S crop (and the mask) resampled onto the part of the
   frame the box covers (``cv2.warpAffine``, the exact inverse of ``crop_frame``'s resize; parts of the box
   outside the image are simply not written).
3. :func:`match_colour` -- colour transfer: the rendered face's mean and spread per channel in CIE Lab, measured
   over the feathered band around the mask's edge, moved onto the source frame's there (Reinhard et al. 2001),
   so the face meets its surroundings without a visible seam.
4. :func:`paste_back` -- ``out = source + mask * (face - source)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from talkinghead.crop import box_roi, crop_affine

__all__ = ["crop_affine", "crop_to_frame", "face_mask", "match_colour", "paste_back", "paste_frames", "box_roi"]

#: mask geometry, as fractions of the face's landmark-box size: hull grown by GROW, feathered by FEATHER (sigma)
GROW = 0.04
FEATHER = 0.06
FOREHEAD = 0.18  # the brows are raised by this much of the face height to cover the forehead's lower part


def crop_to_frame(
    crop: np.ndarray, box: np.ndarray | Iterable[float], shape: tuple[int, ...], replicate: bool = True
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The S x S crop (uint8 (S, S, 3) or float (S, S)) resampled onto the frame region it came from.

    Returns ``(region (ry1 - ry0, rx1 - rx0[, 3]), roi (rx0, ry0, rx1, ry1))``; an empty region when the box
    misses the image."""
    import cv2

    rx0, ry0, rx1, ry1 = roi = box_roi(box, shape)
    if rx1 <= rx0 or ry1 <= ry0:
        return crop[:0, :0], roi
    m = crop_affine(box, crop.shape[0], (rx0, ry0))
    border = cv2.BORDER_REPLICATE if replicate else cv2.BORDER_CONSTANT
    out = cv2.warpAffine(crop, m, (rx1 - rx0, ry1 - ry0), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)
    return out, roi


def _hull_points(points: np.ndarray) -> np.ndarray:
    """(68|72, 2) landmarks -> the points whose hull is the face: the 68, plus the brows raised to the forehead
    (the irises of ``ibug68+iris`` points, NaN when absent, lie inside the face and are left out)."""
    p = np.asarray(points, dtype=np.float64)[:68]
    brows = p[17:27]
    chin = p[8]
    up = brows.mean(0) - chin
    height = float(np.linalg.norm(up))
    up = up / max(height, 1e-6)
    return np.concatenate([p, brows + up * FOREHEAD * height])


def face_mask(landmark_sets: Iterable[np.ndarray], size: int) -> np.ndarray:
    """Soft face mask float32 (S, S) in [0, 1] in crop pixels from one or more (68, 2) landmark sets.

    1 inside the grown hull, feathered outside it, exactly 0 within ``2 * feather`` of the crop border and where
    the value would be under 1/255."""
    import cv2

    sets = [np.asarray(p, dtype=np.float64) for p in landmark_sets]
    pts = np.concatenate([_hull_points(p) for p in sets])
    extent = float(np.max(pts.max(0) - pts.min(0)))
    grow = max(1, int(round(GROW * extent)))
    sigma = max(1.0, FEATHER * extent)
    hard = np.zeros((size, size), np.uint8)
    for p in sets:
        hull = cv2.convexHull(np.round(_hull_points(p) * 4).astype(np.int32))
        cv2.fillConvexPoly(hard, hull, 255, lineType=cv2.LINE_AA, shift=2)
    hard = cv2.dilate(hard, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    mask = cv2.GaussianBlur(hard.astype(np.float32) / 255.0, (0, 0), sigma)
    # a taper to 0 at the crop's border: the rendered crop never meets the frame at a hard square edge
    margin = 2.0 * sigma
    r = np.arange(size, dtype=np.float32)
    edge = np.clip(np.minimum(r, size - 1 - r) / margin, 0.0, 1.0)  # 0 on the outermost pixels
    taper = np.minimum.outer(edge, edge)
    taper = taper * taper * (3 - 2 * taper)  # smoothstep: no kink where the taper starts
    mask = mask * taper
    mask[mask < 1.0 / 255.0] = 0.0
    return mask.clip(0.0, 1.0).astype(np.float32)


def match_colour(face: np.ndarray, source: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Reinhard colour transfer: ``face``'s per-channel Lab mean and spread (weighted by ``weight``) moved onto
    ``source``'s.  uint8 (H, W, 3) x 2, float (H, W) -> float32 (H, W, 3) RGB in [0, 255]."""
    import cv2

    w = weight.astype(np.float64)[..., None]
    total = float(w.sum())
    f_lab = cv2.cvtColor(face.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    if total < 1e-6:
        return face.astype(np.float32)
    s_lab = cv2.cvtColor(source.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)

    def stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = (x * w).sum((0, 1)) / total
        std = np.sqrt(((x - mean) ** 2 * w).sum((0, 1)) / total)
        return mean, std

    fm, fs = stats(f_lab)
    sm, ss = stats(s_lab)
    gain = np.clip(ss / np.maximum(fs, 1e-3), 0.5, 2.0)
    out = ((f_lab - fm) * gain + sm).astype(np.float32)
    rgb = cv2.cvtColor(out, cv2.COLOR_LAB2RGB) * 255.0
    return np.clip(rgb, 0.0, 255.0).astype(np.float32)


def paste_back(
    source: np.ndarray,
    box: np.ndarray | Iterable[float],
    face: np.ndarray,
    mask: np.ndarray,
    colour: bool = True,
) -> np.ndarray:
    """The rendered crop ``face`` uint8 (S, S, 3) pasted into ``source`` uint8 (H, W, 3) where the crop ``box``
    (x0, y0, side) came from, through ``mask`` float (S, S) (:func:`face_mask`).  Returns uint8 (H, W, 3); pixels
    where the warped mask is 0 are ``source``'s, unchanged."""
    out = source.copy()
    face_r, (rx0, ry0, rx1, ry1) = crop_to_frame(face, box, source.shape)
    if face_r.size == 0:
        return out
    mask_r, _ = crop_to_frame(mask.astype(np.float32), box, source.shape, replicate=False)
    mask_r[mask_r < 1.0 / 255.0] = 0.0
    if not mask_r.any():
        return out
    region = source[ry0:ry1, rx0:rx1]
    if colour:
        band = mask_r * (1.0 - mask_r)  # the feathered edge: where face and surroundings meet
        if band.sum() < 1.0:
            band = mask_r
        face_f = match_colour(face_r, region, band)
    else:
        face_f = face_r.astype(np.float32)
    m = mask_r[..., None]
    blend = region.astype(np.float32) + m * (face_f - region.astype(np.float32))
    blend = np.clip(np.round(blend), 0, 255).astype(np.uint8)
    out[ry0:ry1, rx0:rx1] = np.where(m > 0, blend, region)
    return out


def paste_frames(
    faces: Iterable[np.ndarray],
    points: np.ndarray,
    source: np.ndarray,
    box: np.ndarray | Iterable[float],
    source_landmarks: np.ndarray,
) -> Iterator[np.ndarray]:
    """Full frames for a clip: each rendered crop (S, S, 3) with the landmarks it was rendered from
    (``points`` (N, 68, 2), crop pixels) pasted into ``source`` at the fixed ``box``; the mask covers the source
    face (``source_landmarks`` (68, 2), crop pixels) and the rendered one."""
    for face, pts in zip(faces, points):
        mask = face_mask([source_landmarks, pts], face.shape[0])
        yield paste_back(source, box, face, mask)
