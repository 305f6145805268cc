"""Embedding match loss L_MCH (paper Sec. 3.2, eq. 3): the L1 difference between E(x_i(s_k), y_i(s_k)) and W_i."""
from __future__ import annotations

import torch


def match_loss(w: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between D's video vectors W_i (B, d) and E's embeddings, (B, d) or (B, K, d).

    Per-frame embeddings E(x_k, y_k) (B, K, d) are each compared with their video's W_i, as the authors' FSTH
    (``criterions/dis_embed.py``) and vt (``LossMatch``) do.  The paper writes an L1 norm; we average over the d
    entries (and frames and batch), as FSTH and vt do, so the weight does not depend on the embedding size.
    Gradients reach both sides; callers detach W (the paper minimises L_MCH over E and G only).
    """
    if e.dim() == w.dim() + 1:
        w = w.unsqueeze(-2)
    if w.shape[0] != e.shape[0] or w.shape[-1] != e.shape[-1] or w.dim() != e.dim():
        raise ValueError(f"W_i {tuple(w.shape)} and the embeddings {tuple(e.shape)} do not match")
    return (w.float() - e.float()).abs().mean()
