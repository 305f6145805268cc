"""Embedding match loss L_MCH = |W_i - e_hat_i| (paper eq. 3)."""
from __future__ import annotations

import torch


def match_loss(w: torch.Tensor, e_hat: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between D's video vectors W_i (B, d) and E's embeddings e_hat_i (B, d).

    The paper writes an L1 norm; we average over the d entries (and the batch) so the weight does not depend on
    the embedding size.  Gradients reach both sides; callers detach the side they do not want to move.
    """
    if w.shape != e_hat.shape:
        raise ValueError(f"W_i {tuple(w.shape)} and e_hat {tuple(e_hat.shape)} must have the same shape")
    return (w.float() - e_hat.float()).abs().mean()
