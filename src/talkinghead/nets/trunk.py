"""The down-sampling trunk shared by the embedder E and the discriminator D (paper, "Implementation details")."""
from __future__ import annotations

import torch
from torch import nn

from talkinghead.nets.layers import ResBlockDown, SelfAttention, channel_plan, check_image_size


class DownTrunk(nn.Module):
    """Residual down-sampling blocks from ``base`` to ``out_channels``, self-attention at ``attn_res``.

    (B, in_channels, S, S) -> list of the residual blocks' outputs (the self-attention layer's output is not one of
    them: D's feature matching reads "after each residual block", paper Sec. 3.2); the last is
    (B, out_channels, bottom, bottom).  The number of blocks is log2(S / bottom): 6 for the paper's 256² model.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        base_channels: int,
        max_channels: int,
        out_channels: int,
        attn_res: int | None = 32,
        bottom: int = 4,
    ) -> None:
        super().__init__()
        num_blocks = check_image_size(image_size) - check_image_size(bottom, min_size=1)
        if num_blocks < 2:
            raise ValueError(f"image_size {image_size} too small for a trunk down to {bottom}x{bottom}")
        if attn_res is not None and not (bottom < attn_res < image_size and attn_res & (attn_res - 1) == 0):
            raise ValueError(f"attn_res={attn_res}: self-attention goes after a down-sampling block that outputs "
                             f"{image_size // 2}..{bottom * 2} (powers of two), or null for none")
        chans = channel_plan(num_blocks, base_channels, max_channels)
        chans[-1] = out_channels
        blocks: list[nn.Module] = []
        cin, res = in_channels, image_size
        for i, cout in enumerate(chans):
            blocks.append(ResBlockDown(cin, cout, norm=False, preactivate=i > 0))
            res //= 2
            if attn_res is not None and res == attn_res:
                blocks.append(SelfAttention(cout))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            if isinstance(block, ResBlockDown):
                feats.append(x)
        return feats
