"""Embedder E(x, y): a frame and its landmark image -> one d-dimensional vector (paper, Sec. 3.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.errors import ConfigError
from talkinghead.nets.trunk import DownTrunk

#: The final pooling orders: ``sum_relu`` sums the last block's map over space, then applies ReLU (the paper's
#: text, "global sum pooling followed by a ReLU"; this code's order from the start); ``relu_sum`` applies ReLU per
#: position, then sums (the authors' FSTH code, embedders/FSTH.py).
POOLS = ("sum_relu", "relu_sum")


class Embedder(nn.Module):
    """E(x, y) -> e: down-sampling residual trunk, global sum pooling, ReLU (``pool``: in which order; see POOLS).

    ``forward(x (B,3,S,S), y (B,3,S,S)) -> (B, emb_dim)``;
    ``embed(x (B,K,3,S,S), y (B,K,3,S,S)) -> (B, emb_dim)`` is the person's embedding, the mean over K frames;
    ``embed_frames`` gives the K per-frame embeddings (B, K, emb_dim) that the match term compares with W_i.
    """

    def __init__(
        self,
        image_size: int = 256,
        emb_dim: int = 512,
        base_channels: int = 64,
        max_channels: int = 512,
        attn_res: int | None = 32,
        pool: str = "sum_relu",
    ) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ConfigError(f"model.embedder.pool={pool!r}: expected one of {', '.join(POOLS)}")
        self.image_size, self.emb_dim, self.pool = image_size, emb_dim, pool
        self.trunk = DownTrunk(6, image_size, base_channels, max_channels, emb_dim, attn_res)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert x.shape == y.shape and x.shape[1:] == (3, self.image_size, self.image_size), (x.shape, y.shape)
        h = self.trunk(torch.cat([x, y], dim=1))[-1]
        if self.pool == "relu_sum":
            return F.relu(h).sum(dim=(2, 3))
        return F.relu(h.sum(dim=(2, 3)))

    def embed_frames(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-frame embeddings E(x_k, y_k): (B,K,3,S,S) x 2 -> (B, K, emb_dim)."""
        b, k = x.shape[:2]
        return self(x.flatten(0, 1), y.flatten(0, 1)).view(b, k, -1)

    def embed(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The person's embedding e_hat = mean_k E(x_k, y_k): (B,K,3,S,S) x 2 -> (B, emb_dim)."""
        return self.embed_frames(x, y).mean(dim=1)
