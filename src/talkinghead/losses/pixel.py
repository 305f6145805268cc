"""Pixel L1 reconstruction loss (used where no pretrained perceptual network can be loaded)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of two image batches (B, 3, H, W) in [-1, 1]."""
    return F.l1_loss(fake.float(), real.float())
