"""Image conversions used everywhere (data loaders, metrics, grids, videos): uint8 pictures <-> tensors in [-1, 1]."""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """uint8 (…, H, W, 3) -> float32 (…, 3, H, W) in [-1, 1]."""
    if images.dtype != np.uint8 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images (..., H, W, 3), got {images.dtype} {images.shape}")
    with warnings.catch_warnings():  # read-only arrays (decoded video) are fine: .float() copies before writing
        warnings.simplefilter("ignore", UserWarning)
        source = torch.from_numpy(images)
    return source.movedim(-1, -3).float().contiguous().div_(127.5).sub_(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(…, 3, H, W) in [-1, 1] -> (…, H, W, 3) uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


def make_grid(rows: Sequence[Sequence[torch.Tensor]], pad: int = 2) -> np.ndarray:
    """Lay out images (3, H, W) in [-1, 1] as a grid: ``rows[r][c]``; returns (H', W', 3) uint8 on white."""
    h, w = rows[0][0].shape[-2:]
    ncols = max(len(r) for r in rows)
    grid = np.full((len(rows) * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
            grid[y0 : y0 + h, x0 : x0 + w] = to_uint8(img)
    return grid


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an (H, W, 3) uint8 array as PNG (atomically: a reader never sees half a file)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(image).save(tmp)
    tmp.replace(path)
    return path


def sample_rows(
    sources: torch.Tensor, target_landmarks: torch.Tensor, generated: torch.Tensor, real: torch.Tensor,
    max_sources: int = 4,
) -> list[list[torch.Tensor]]:
    """Rows of (K source frames | target landmarks | generated | real) for a batch.

    sources (B, K, 3, H, W); the others (B, 3, H, W).
    """
    rows = []
    for b in range(generated.shape[0]):
        srcs = list(sources[b, :max_sources])
        rows.append(srcs + [target_landmarks[b], generated[b], real[b]])
    return rows


def uint8_chw(images: np.ndarray) -> torch.Tensor:
    """uint8 (…, H, W, 3) -> uint8 (…, 3, H, W), still 0..255: what training loaders put on the device (4x less
    host-to-device traffic than float32); ``batch_to_float`` converts it there."""
    if images.dtype != np.uint8 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images (..., H, W, 3), got {images.dtype} {images.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        source = torch.from_numpy(images)
    return source.movedim(-1, -3).contiguous()


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (…, 3, H, W) -> float32 in [-1, 1] on the same device (as ``from_uint8``); float input unchanged."""
    if images.dtype != torch.uint8:
        return images
    return images.float().div_(127.5).sub_(1.0)


IMAGE_KEYS = ("frames", "landmark_images")


def batch_to_float(batch: dict) -> dict:
    """A sample batch with its uint8 image tensors (``frames``, ``landmark_images``) in [-1, 1] float32."""
    if not any(isinstance(batch.get(k), torch.Tensor) and batch[k].dtype == torch.uint8 for k in IMAGE_KEYS):
        return batch
    return {**batch, **{k: to_unit_range(batch[k]) for k in IMAGE_KEYS if k in batch}}
