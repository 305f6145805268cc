"""Rasterise facial landmarks into the RGB "landmark image" the generator is conditioned on.

Zakharov et al. (2019), Sec. 3.1: the landmarks ``y_i(t)`` are drawn as an image "by connecting the
landmarks with line segments of a fixed colour per facial part" (jaw, both brows, nose bridge, nose base,
both eyes, outer and inner lips), on a black background, at the frame's resolution.

Conventions
-----------
* Points are ``(x, y)`` in pixels of the ``H x W`` image with the OpenCV convention that integer
  coordinates are pixel *centres* (a point at ``(0, 0)`` lies in the centre of the top-left pixel).
* Lines are anti-aliased (``cv2.LINE_AA``) and drawn at sub-pixel precision (``shift`` = 4 bits).
* Line width (pixels) is :func:`line_width_for` ``= max(1, round(min(H, W) / 128))``, i.e. 1 px up to
  191 px, 2 px at 256, 4 px at 512: the drawing looks the same at every resolution.
* Points outside the image are allowed: they are clipped to a band of one image size around the image
  (far enough that the visible part of every segment is unchanged in practice), and OpenCV clips the
  segments to the canvas.  Non-finite points (NaN / inf) raise :class:`LandmarkValueError`.

Landmark sets (``talkinghead.landmarks.sets``): ``(68, 2)`` points (``ibug68``, the paper) are drawn as above and
nothing else.  ``(72, 2)`` points (``ibug68+iris``) also draw each present iris as a filled disc of its radius in
:data:`IRIS_COLOUR`, under the lines (the eyelid lines stay on top); an absent iris (NaN rows: a closed eye) is
not drawn.

The function runs inside data loaders, so it is a handful of ``cv2.polylines`` calls (about 0.1 ms
for a 256 x 256 image on one CPU core).
"""

from __future__ import annotations

import math
from typing import Final, Sequence

import cv2
import numpy as np
import torch

from talkinghead.landmarks.sets import EYE_POINTS, IRIS_ROWS, iris_rows_valid
from talkinghead.visualize import from_uint8

__all__ = [
    "PARTS",
    "PART_COLOURS",
    "IRIS_COLOUR",
    "LandmarkValueError",
    "line_width_for",
    "draw_landmarks",
    "landmark_image_tensor",
]

_SHIFT: Final[int] = 4  # sub-pixel bits for cv2 drawing
_SCALE: Final[float] = float(1 << _SHIFT)

#: The facial parts as ``name -> (landmark indices in drawing order, closed polyline?)`` (iBUG-68, 0-based).
PARTS: Final[dict[str, tuple[tuple[int, ...], bool]]] = {
    "jaw": (tuple(range(0, 17)), False),
    "right_brow": (tuple(range(17, 22)), False),
    "left_brow": (tuple(range(22, 27)), False),
    "nose_bridge": (tuple(range(27, 31)), False),
    "nose_base": ((30, 31, 32, 33, 34, 35, 30), False),  # 31-35 plus the joins to the nose tip 30
    "right_eye": (EYE_POINTS["right"], True),
    "left_eye": (EYE_POINTS["left"], True),
    "outer_lip": (tuple(range(48, 60)), True),
    "inner_lip": (tuple(range(60, 68)), True),
}

#: One fixed, distinct RGB colour per part (same keys as :data:`PARTS`).
PART_COLOURS: Final[dict[str, tuple[int, int, int]]] = {
    "jaw": (255, 255, 255),        # white
    "right_brow": (255, 128, 0),   # orange
    "left_brow": (255, 0, 255),    # magenta
    "nose_bridge": (0, 0, 255),    # blue
    "nose_base": (0, 255, 255),    # cyan
    "right_eye": (255, 0, 0),      # red
    "left_eye": (0, 255, 0),       # green
    "outer_lip": (255, 255, 0),    # yellow
    "inner_lip": (128, 0, 255),    # violet
}

#: The irises' colour (``ibug68+iris`` only): a light blue none of the parts uses.
IRIS_COLOUR: Final[tuple[int, int, int]] = (128, 160, 255)

_PART_ARRAYS: Final[tuple[tuple[np.ndarray, bool, tuple[int, int, int]], ...]] = tuple(
    (np.asarray(idx, dtype=np.intp), closed, PART_COLOURS[name]) for name, (idx, closed) in PARTS.items()
)


class LandmarkValueError(ValueError):
    """Landmarks of the wrong shape or with non-finite values."""


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        if len(size) != 2:
            raise LandmarkValueError(f"size must be an int or (H, W), got {size!r}")
        h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise LandmarkValueError(f"image size must be positive, got H={h}, W={w}")
    return h, w


def line_width_for(size: int | Sequence[int]) -> int:
    """Default line width in pixels for an image of ``size``: ``max(1, round(min(H, W) / 128))``."""
    h, w = _hw(size)
    return max(1, int(round(min(h, w) / 128)))


def _check_points(points: np.ndarray) -> np.ndarray:
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape not in ((68, 2), (72, 2)):
        raise LandmarkValueError(
            f"expected 68 iBUG landmarks of shape (68, 2) (or (72, 2) with irises), got shape {pts.shape}"
        )
    finite = np.isfinite(pts).all(axis=1)
    if len(pts) == 72:  # an absent iris is NaN in both of its rows (sets' rule)
        finite[68:] = np.repeat(iris_rows_valid(pts), 2)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise LandmarkValueError(
            f"landmarks contain NaN/inf at indices {bad.tolist()}; drop or interpolate such frames first"
        )
    return pts


def _draw_irises(img: np.ndarray, pts: np.ndarray, w: int, h: int) -> None:
    """Each present iris of (72, 2) ``pts``: a filled anti-aliased disc of its radius (one cv2 call per eye)."""
    for centre, rim in IRIS_ROWS.values():
        cx, cy, rx, ry = (float(v) for v in (*pts[centre], *pts[rim]))
        if not math.isfinite(cx + cy + rx + ry):
            continue  # absent
        radius = min(math.hypot(rx - cx, ry - cy), 2.0 * max(w, h))
        cx, cy = min(max(cx, -w), 2 * w), min(max(cy, -h), 2 * h)
        cv2.circle(img, (round(cx * _SCALE), round(cy * _SCALE)), round(radius * _SCALE), IRIS_COLOUR, -1,
                   cv2.LINE_AA, _SHIFT)


def draw_landmarks(
    points: np.ndarray, size: int | Sequence[int], line_width: float | None = None
) -> np.ndarray:
    """Draw 68 iBUG landmarks as coloured polylines on black (and irises, for ``ibug68+iris`` points).

    Args:
        points: ``(68, 2)`` float pixel coordinates ``(x, y)``, or ``(72, 2)`` with irises (see
            ``talkinghead.landmarks.sets``; NaN rows: an absent iris, not drawn).
        size: ``H`` (square) or ``(H, W)`` of the output image.
        line_width: pixels; default :func:`line_width_for` ``(size)``. Rounded to an int >= 1.

    Returns:
        ``(H, W, 3)`` uint8 RGB image, colours per part from :data:`PART_COLOURS`.
    """
    h, w = _hw(size)
    pts = _check_points(points)
    lw = line_width_for((h, w)) if line_width is None else max(1, int(round(float(line_width))))
    # Clip to a band around the image so the fixed-point int32 coordinates cannot overflow.
    lines = np.clip(pts[:68], (-w, -h), (2 * w, 2 * h))
    fixed = np.rint(lines * _SCALE).astype(np.int32)
    img = np.zeros((h, w, 3), dtype=np.uint8)
    if len(pts) == 72:
        _draw_irises(img, pts, w, h)
    for idx, closed, colour in _PART_ARRAYS:
        cv2.polylines(img, [fixed[idx]], closed, colour, lw, cv2.LINE_AA, _SHIFT)
    return img


def landmark_image_tensor(
    points: np.ndarray, size: int | Sequence[int], line_width: float | None = None
) -> torch.Tensor:
    """:func:`draw_landmarks` as a float32 ``(3, H, W)`` tensor in [-1, 1] (black -> -1)."""
    return from_uint8(draw_landmarks(points, size, line_width))
