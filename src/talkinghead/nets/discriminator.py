"""Projection discriminator D(x, y, i) = V(x, y)^T (W_i + w0) + b (paper, Sec. 3.2)."""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.nets.layers import ResBlock, sn_linear
from talkinghead.nets.spectral import SpectralNorm, spectral_norm
from talkinghead.nets.trunk import DownTrunk

#: State-dict keys of the W table, relative to the discriminator: plain (``w_norm="none"``, the default) and
#: spectrally normalised as one matrix (``w_norm="spectral"``, FSTH's).
W_TABLE_KEYS = ("W.weight", "W.parametrizations.weight.original")
#: Keys that only a discriminator from before the w0-b layer had (a ``w0`` vector and a ``b`` scalar).
OLD_LAYOUT_KEYS = ("w0", "b")
#: How the W table may be normalised.
W_NORMS = ("none", "spectral")


class ProjectionDiscriminator(nn.Module):
    """D(x, y, i): realism score of frame x under landmarks y for training video i.

    V(x, y) is the trunk + one residual block + global sum pooling + ReLU, (B, emb_dim).
    ``W`` holds one emb_dim vector per training video (the paper's columns W_i, stored as rows here), pulled
    towards the embedder's output by the match loss; ``w0`` and ``b`` are shared.  As in the authors' FSTH
    discriminator (``discriminators/FSTH.py``): W is initialised uniform in [-0.1, 0.1], and (w0, b) is one
    spectrally normalised linear layer ``w0_b`` (emb_dim -> 1), so V^T w0 + b = w0_b(V).

    ``w_norm``: ``"none"`` (default): W is a plain table with *sparse* row gradients (``nn.Embedding(sparse=True)``):
    a step's gradient, all-reduce and optimiser update touch only the batch's rows (docs/paper.md, "W").
    ``"spectral"``: FSTH's W, spectrally normalised as one (videos x emb_dim) matrix; its row RMS norm is then at
    most sqrt(emb_dim / videos) (~0.06 at VoxCeleb2's 145k videos), so the paper's match weight pulls e_hat to ~0
    (``make rehearse``), and sigma(W)'s gradient is dense over all rows.  Only the batch's rows are divided by
    sigma(W) (the whole normalised table is never formed).

    ``forward(x (B,3,S,S), y (B,3,S,S), video_index (B,) | None, w (B,emb)|(emb,) | None)``
    -> ``(score (B,), features [outputs of D's residual blocks])``.  Give ``w`` instead of ``video_index`` to score
    with an explicit projection vector (fine-tuning's w' = w0 + e_new).
    """

    def __init__(
        self,
        num_videos: int,
        image_size: int = 256,
        emb_dim: int = 512,
        base_channels: int = 64,
        max_channels: int = 512,
        attn_res: int | None = 32,
        w_norm: str = "none",
    ) -> None:
        super().__init__()
        if num_videos < 1:
            raise ValueError(f"the discriminator needs at least one training video, got num_videos={num_videos}")
        if w_norm not in W_NORMS:
            raise ValueError(f"w_norm must be one of {list(W_NORMS)}, got {w_norm!r}")
        self.image_size, self.emb_dim, self.num_videos, self.w_norm = image_size, emb_dim, num_videos, w_norm
        self.trunk = DownTrunk(6, image_size, base_channels, max_channels, emb_dim, attn_res)
        self.last = ResBlock(emb_dim)
        W = nn.Embedding(num_videos, emb_dim, sparse=w_norm == "none")
        nn.init.uniform_(W.weight, -0.1, 0.1)
        self.W = spectral_norm(W) if w_norm == "spectral" else W
        self.w0_b = sn_linear(emb_dim, 1)

    @property
    def w_table(self) -> nn.Parameter:
        """The W table's parameter (videos, emb_dim): the raw one under spectral norm."""
        return self.W.parametrizations.weight.original if self.w_norm == "spectral" else self.W.weight

    @property
    def sparse_w(self) -> bool:
        """True when W's gradient is sparse (only the batch's rows): it needs a sparse optimiser (SparseAdam)."""
        return self.w_norm == "none"

    @property
    def w0(self) -> torch.Tensor:
        """w0, (emb_dim,): the spectrally normalised weight of the ``w0_b`` layer."""
        return self.w0_b.weight[0]

    @property
    def b(self) -> torch.Tensor:
        """b, (1,)."""
        return self.w0_b.bias

    @torch.compiler.disable  # sparse gradients stay in eager mode (AOTAutograd does not make them)
    def w_rows(self, video_index: torch.Tensor) -> torch.Tensor:
        """W_i for a batch of video indices, (B,) -> (B, emb_dim): rows of the table (divided by sigma(W) under
        ``w_norm="spectral"``)."""
        if self.w_norm == "none":
            return self.W(video_index)
        table = self.W.parametrizations.weight.original
        sn: SpectralNorm = self.W.parametrizations.weight[0]
        return (F.embedding(video_index, table).float() / sn.sigma(table)).to(table.dtype)

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
        """``w`` (B, emb) or (emb,): W_i + w0 given by the caller (fine-tuning's w0 + e_new; the hinge's fake
        half with W_i detached)."""
        v, feats = self.features(x, y)
        if w is None:
            if video_index is None:
                raise ValueError("give the video index i (meta-learning) or a projection vector w (fine-tuning)")
            w = self.w_rows(video_index) + self.w0
        score = (v * w.expand_as(v)).sum(dim=1) + self.b
        return score, feats


def num_videos_in_state(state: Mapping[str, torch.Tensor], prefix: str = "discriminator.") -> int | None:
    """Rows of the W table in a state dict (None when there is none).

    Raises ``ValueError`` (one line) for the layout of earlier versions (plain W, w0 vector), which today's
    networks cannot load.
    """
    if any(f"{prefix}{k}" in state for k in OLD_LAYOUT_KEYS):
        raise ValueError(
            "it was written by an earlier talkinghead whose networks differ from today's (plain W table and w0 "
            "vector in D, narrower G decoder, one attention resolution): it cannot be loaded, meta-learn again"
        )
    for key in W_TABLE_KEYS:
        if f"{prefix}{key}" in state:
            return int(state[f"{prefix}{key}"].shape[0])
    return None


def w_norm_in_state(state: Mapping[str, torch.Tensor], prefix: str = "discriminator.") -> str | None:
    """``"none"`` or ``"spectral"``: how the W table of a state dict is normalised (None without a W table)."""
    if f"{prefix}{W_TABLE_KEYS[1]}" in state:
        return "spectral"
    return "none" if f"{prefix}{W_TABLE_KEYS[0]}" in state else None
