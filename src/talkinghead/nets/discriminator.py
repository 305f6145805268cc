"""Projection discriminator D(x, y, i) = V(x, y)^T (W_i + w0) + b (paper, Sec. 3.2)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.nets.layers import ResBlock
from talkinghead.nets.trunk import DownTrunk


class ProjectionDiscriminator(nn.Module):
    """D(x, y, i): realism score of frame x under landmarks y for training video i.

    V(x, y) is the trunk + one residual block + global sum pooling + ReLU, (B, emb_dim).
    ``W`` holds one emb_dim vector per training video (the paper's columns W_i, stored as rows here),
    pulled towards the embedder's output by the match loss; ``w0`` and ``b`` are shared.
    ``W`` is not spectrally normalised: it is compared with E's output element by element by the match
    loss, and a rescaled table would break that match (every conv and linear layer is).

    ``forward(x (B,3,S,S), y (B,3,S,S), video_index (B,) | None, w (B,emb)|(emb,) | None)``
    -> ``(score (B,), features [block outputs])``.  Give ``w`` instead of ``video_index`` to score with an
    explicit projection vector (fine-tuning's w' = w0 + e_new).
    """

    def __init__(
        self,
        num_videos: int,
        image_size: int = 256,
        emb_dim: int = 512,
        base_channels: int = 64,
        max_channels: int = 512,
        attn_res: int | None = 32,
    ) -> None:
        super().__init__()
        if num_videos < 1:
            raise ValueError(f"the discriminator needs at least one training video, got num_videos={num_videos}")
        self.image_size, self.emb_dim, self.num_videos = image_size, emb_dim, num_videos
        self.trunk = DownTrunk(6, image_size, base_channels, max_channels, emb_dim, attn_res)
        self.last = ResBlock(emb_dim)
        self.W = nn.Embedding(num_videos, emb_dim)
        nn.init.normal_(self.W.weight, 0.0, 0.02)
        self.w0 = nn.Parameter(torch.zeros(emb_dim))
        self.b = nn.Parameter(torch.zeros(1))

    def features(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """V(x, y) (B, emb_dim) and the intermediate activations used by feature matching."""
        assert x.shape == y.shape and x.shape[1:] == (3, self.image_size, self.image_size), (x.shape, y.shape)
        feats = self.trunk(torch.cat([x, y], dim=1))
        h = self.last(feats[-1])
        feats.append(h)
        return F.relu(h.sum(dim=(2, 3))), feats

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        video_index: torch.Tensor | None = None,
        w: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        v, feats = self.features(x, y)
        if w is None:
            if video_index is None:
                raise ValueError("give the video index i (meta-learning) or a projection vector w (fine-tuning)")
            w = self.W(video_index) + self.w0
        score = (v * w.expand_as(v)).sum(dim=1) + self.b
        return score, feats
