"""SSIM (Wang et al. 2004) on the project's [-1, 1] images: torchmetrics' implementation, range handled."""
from __future__ import annotations

from torch import Tensor
from torchmetrics.image import StructuralSimilarityIndexMeasure


class SSIM(StructuralSimilarityIndexMeasure):
    """torchmetrics SSIM (Gaussian window 11, sigma 1.5) whose ``update(fake, real)`` takes float
    ``(B, 3, H, W)`` images in [-1, 1]; they are mapped to [0, 1] (``data_range=1``) and clipped there."""

    def __init__(self, **kwargs: object) -> None:
        kwargs.setdefault("data_range", 1.0)
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def update(self, preds: Tensor, target: Tensor) -> None:
        if not (preds.is_floating_point() and target.is_floating_point()):
            raise TypeError(f"SSIM takes float images in [-1, 1], got {preds.dtype} and {target.dtype}")
        super().update(((preds + 1) / 2).clamp(0, 1), ((target + 1) / 2).clamp(0, 1))
