"""Face-crop geometry, one module for preprocessing, fine-tuning, reenactment and paste-back.

A clip's (or a photo's) face crop is one square box ``(x0, y0, side)`` in frame pixels, found from the
per-frame 68-point landmarks (``face_track``), cut from each frame padded black where it leaves the image and
resized to S x S (``crop_frame``); landmarks move into crop pixels with ``landmarks_to_crop``; ``crop_affine``
is the inverse map, crop pixels -> frame pixels (what paste-back warps with).
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import numpy as np


class CropSettings(Protocol):
    """What ``face_track`` reads of a config (``data_modules.preprocess.PreprocessConfig`` has them)."""

    margin: float  # the box is the landmarks' box grown by this fraction
    min_face: int  # px: a smaller face is skipped
    min_frames: int  # at least this many frames must keep a face
    min_detected: float  # and at least this fraction of the sampled frames


def _box(points: np.ndarray) -> np.ndarray:
    """(68, 2) -> (x0, y0, x1, y1)."""
    return np.array([points[:, 0].min(), points[:, 1].min(), points[:, 0].max(), points[:, 1].max()])


def face_track(
    landmarks: list[np.ndarray | None], cfg: CropSettings
) -> tuple[np.ndarray, np.ndarray, float] | str:
    """One square crop box for a clip from its per-frame landmarks, or the reason to skip the clip.

    ``landmarks``: per sampled frame a (68, 2) array or None. Returns ``(box (x0, y0, side) float, kept frame
    positions int (M,), face width px)``. Frames whose face centre is more than half a face width from the
    median centre are dropped (another person, a false detection).
    """
    n = len(landmarks)
    found = [i for i, p in enumerate(landmarks) if p is not None]
    if not found:
        return f"no face found in any of {n} sampled frames"
    boxes = np.stack([_box(landmarks[i]) for i in found])
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    widths = boxes[:, 2] - boxes[:, 0]
    med_c, med_w = np.median(centres, axis=0), float(np.median(widths))
    on_track = np.linalg.norm(centres - med_c, axis=1) <= 0.5 * max(med_w, 1.0)
    kept = np.asarray(found)[on_track]
    if len(kept) < max(cfg.min_frames, int(np.ceil(cfg.min_detected * n))):
        return f"face found in only {len(kept)} of {n} sampled frames (need {cfg.min_detected:.0%})"
    face_w = float(np.median(widths[on_track]))
    if face_w < cfg.min_face:
        return f"face too small ({face_w:.0f} px < {cfg.min_face} px)"
    b = boxes[on_track]
    x0, y0, x1, y1 = b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()
    side = max(x1 - x0, y1 - y0) * (1.0 + cfg.margin)
    cx, cy = (
        (x0 + x1) / 2,
        (y0 + y1) / 2 - 0.08 * side,
    )  # landmarks stop at the brows: leave room for the head
    return np.array([cx - side / 2, cy - side / 2, side]), kept, face_w


def crop_frame(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Square crop ``box`` (x0, y0, side) of uint8 (H, W, 3), padded black outside, resized to
    (size, size, 3)."""
    import cv2

    x0, y0, side = (int(round(v)) for v in box)
    h, w = frame.shape[:2]
    pad = max(0, -x0, -y0, x0 + side - w, y0 + side - h)
    if pad:
        frame = cv2.copyMakeBorder(frame, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        x0, y0 = x0 + pad, y0 + pad
    crop = frame[y0 : y0 + side, x0 : x0 + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interp)


def landmarks_to_crop(points: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Map (68, 2) frame pixels into the (size x size) crop of ``box`` (x0, y0, side) as ``crop_frame``."""
    x0, y0, side = (int(round(v)) for v in box)
    return ((points - np.array([x0, y0], dtype=np.float32)) * (size / side)).astype(np.float32)


def _int_box(box: np.ndarray | Iterable[float]) -> tuple[int, int, int]:
    x0, y0, side = (int(round(float(v))) for v in box)
    return x0, y0, side


def box_roi(box: np.ndarray | Iterable[float], shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """The part of the frame (H, W) the crop box covers: (rx0, ry0, rx1, ry1), clipped to the image."""
    x0, y0, side = _int_box(box)
    h, w = shape[:2]
    return max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)


def crop_affine(box: np.ndarray | Iterable[float], size: int, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """(2, 3) affine map of crop pixels -> frame pixels (relative to ``origin``), the inverse of ``crop_frame``'s
    resize (pixel centres: ``x = (u + 0.5) side / S - 0.5 + x0``)."""
    x0, y0, side = _int_box(box)
    a = side / size
    return np.array(
        [[a, 0.0, 0.5 * a - 0.5 + x0 - origin[0]], [0.0, a, 0.5 * a - 0.5 + y0 - origin[1]]], dtype=np.float64
    )
