"""Procedural portraits: a synthetic head (``data_modules.procedural_heads``) placed anywhere on a larger textured
canvas, optionally "painted" (an edge-preserving stylisation filter), with its exact 68 landmarks.

These are the scenes full-frame output is tested and shown on (``talkinghead.inference.paste``): a whole picture, not a
face crop, where the face can sit near (or across) the picture's edge, and a painting-like one.
"""

from __future__ import annotations

import numpy as np

from data_modules.procedural_heads import SyntheticHeads

__all__ = ["portrait", "textured_canvas"]


def textured_canvas(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 (H, W, 3): smooth colour fields at three scales plus fine grain (a canvas/wall-like background)."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3), np.float32)
    for cells, amp in ((3, 70.0), (9, 30.0), (27, 14.0)):
        grid = rng.normal(0.0, 1.0, (cells, cells, 3)).astype(np.float32)
        out += amp * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
    base = rng.uniform(60, 190, 3).astype(np.float32)
    out += base + rng.normal(0.0, 6.0, (height, width, 3)).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def portrait(
    heads: SyntheticHeads,
    identity: int,
    video: int = 0,
    t: float = 0.0,
    *,
    canvas: tuple[int, int] = (180, 240),
    head_size: int = 120,
    offset: tuple[int, int] = (60, 30),
    painted: bool = False,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``t`` of ``heads``' ``identity`` / ``video`` as a ``head_size``² square at ``offset`` (x, y; it may
    reach past the canvas) on a textured ``canvas`` (H, W), blended in with a soft vignette; ``painted`` runs
    ``cv2.stylization`` over the whole picture.  Returns ``(image uint8 (H, W, 3), landmarks float32 (68, 2))``."""
    import cv2

    h, w = canvas
    img = textured_canvas(h, w, seed).astype(np.float32)
    head, pts = heads.render(identity, video, float(t), int(head_size))
    # a soft vignette around the head square: its own background fades into the canvas
    r = (np.arange(head_size, dtype=np.float32) + 0.5) / head_size
    edge = np.clip(np.minimum(r, 1.0 - r) / 0.18, 0.0, 1.0)
    alpha = np.minimum.outer(edge, edge)[..., None]
    alpha = alpha * alpha * (3.0 - 2.0 * alpha)
    x, y = offset
    sx0, sy0 = max(0, -x), max(0, -y)
    dx0, dy0 = max(0, x), max(0, y)
    dx1, dy1 = min(w, x + head_size), min(h, y + head_size)
    if dx1 > dx0 and dy1 > dy0:
        hs = head[sy0 : sy0 + dy1 - dy0, sx0 : sx0 + dx1 - dx0].astype(np.float32)
        a = alpha[sy0 : sy0 + dy1 - dy0, sx0 : sx0 + dx1 - dx0]
        img[dy0:dy1, dx0:dx1] = img[dy0:dy1, dx0:dx1] * (1 - a) + hs * a
    img = np.clip(img, 0, 255).astype(np.uint8)
    if painted:
        img = cv2.stylization(img, sigma_s=30, sigma_r=0.25)
    return img, (np.asarray(pts, np.float32) + np.array([x, y], np.float32))
