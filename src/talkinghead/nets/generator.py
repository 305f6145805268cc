"""Generator G(y, e): landmark image -> frame, person-specific through AdaIN parameters P e (Sec. 3.2)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from talkinghead.nets.folding import FoldedGenerator
from talkinghead.nets.layers import (
    AdaIN,
    ResBlock,
    ResBlockDown,
    ResBlockUp,
    SelfAttention,
    channel_plan,
    check_image_size,
    fold_up_convs,
    sn_conv,
    sn_linear,
)
from talkinghead.nets.spectral import bake


class Generator(nn.Module):
    """G(y, e_hat): image-to-image network whose normalisation is driven by the person's embedding.

    Encoder: ``num_down`` residual down-sampling blocks with instance norm (64 -> 512 channels in the paper);
    bottleneck: ``num_res`` residual blocks with AdaIN; decoder: ``num_down`` residual up-sampling blocks with
    AdaIN whose widths mirror the encoder's (512 -> 512 -> 256 -> 128 -> 64 in the paper's model, as in the
    authors' FSTH generator); self-attention after the encoder block that outputs ``attn_res_down`` and after the
    decoder block that outputs ``attn_res_up`` (paper, "Implementation details": 32x32 in the down-sampling parts, 64x64 in the
    generator's up-sampling part); AdaIN -> ReLU -> conv -> tanh out.

    Every AdaIN scale/bias comes from one vector psi = P e_hat, P a (num_adain_params x emb_dim) matrix.
    ``forward(y (B,3,S,S), e (B,emb) | None, psi (B,n)|(n,) | None) -> (B,3,S,S) in [-1, 1]``; give ``psi``
    directly to render a fine-tuned avatar (psi') or to skip the projection at inference.

    It meets the model interface (``talkinghead.nets.interface.PersonGenerator``): ``project``, ``forward``,
    ``inference_copy`` and ``folded``.
    """

    def __init__(
        self,
        image_size: int = 256,
        emb_dim: int = 512,
        base_channels: int = 64,
        max_channels: int = 512,
        num_down: int = 4,
        num_res: int = 4,
        attn_res_down: int | None = 32,
        attn_res_up: int | None = 64,
    ) -> None:
        super().__init__()
        levels = check_image_size(image_size)
        if num_down >= levels - 1:
            raise ValueError(f"num_down={num_down} too deep for image_size {image_size}")
        bottom = image_size >> num_down
        for name, r, lo, hi in (("attn_res_down", attn_res_down, bottom, image_size // 2),
                                ("attn_res_up", attn_res_up, bottom * 2, image_size)):
            if r is not None and not (lo <= r <= hi and r & (r - 1) == 0):
                raise ValueError(f"{name}={r}: the {name[9:]}-sampling blocks output {lo}..{hi} (powers of two); "
                                 "give one of those, or null for no self-attention there")
        self.image_size, self.emb_dim = image_size, emb_dim
        chans = channel_plan(num_down, base_channels, max_channels)

        down: list[nn.Module] = []
        cin, res = 3, image_size
        for i, cout in enumerate(chans):
            down.append(ResBlockDown(cin, cout, norm=True, preactivate=i > 0))
            res //= 2
            if res == attn_res_down:
                down.append(SelfAttention(cout))
            cin = cout
        self.down = nn.ModuleList(down)

        self.res = nn.ModuleList([ResBlock(cin, adain=True) for _ in range(num_res)])

        up: list[nn.Module] = []
        for cout in reversed(chans):  # FSTH: the first up-sampling block keeps the bottleneck's width
            up.append(ResBlockUp(cin, cout))
            res *= 2
            if res == attn_res_up:
                up.append(SelfAttention(cout))
            cin = cout
        self.up = nn.ModuleList(up)
        self.out_norm = AdaIN(cin)
        self.out_conv = sn_conv(cin, 3)

        self.adain_sizes = [b.num_adain_params for b in self.res] + [
            b.num_adain_params for b in self.up if isinstance(b, ResBlockUp)
        ] + [self.out_norm.num_params]
        self.num_adain_params = sum(self.adain_sizes)
        self.P = sn_linear(emb_dim, self.num_adain_params, bias=False)

    def project(self, e: torch.Tensor) -> torch.Tensor:
        """psi = P e_hat: (B, emb_dim) -> (B, num_adain_params)."""
        return self.P(e)

    def inference_copy(self) -> nn.Module:
        """A frozen copy rendering the same frames faster: the spectral-norm divisions baked into the weights (they
        do not change at inference) and each up-sampling block's first convolution run at the low resolution
        (``talkinghead.nets.layers.UpConv``); ``forward`` as this one's."""
        return fold_up_convs(bake(copy.deepcopy(self))).eval().requires_grad_(False)

    def folded(self, psi: torch.Tensor) -> nn.Module:
        """``forward(y (B,3,S,S)) -> (B,3,S,S)`` with ``psi`` (num_adain_params,) folded into every AdaIN, in layers
        the ONNX exporter takes (``talkinghead.nets.folding.FoldedGenerator``)."""
        return FoldedGenerator(self, psi)

    def forward(
        self, y: torch.Tensor, e: torch.Tensor | None = None, psi: torch.Tensor | None = None
    ) -> torch.Tensor:
        assert y.shape[1:] == (3, self.image_size, self.image_size), y.shape
        if psi is None:
            if e is None:
                raise ValueError("give the embedding e_hat or the AdaIN parameters psi")
            psi = self.project(e)
        if psi.dim() == 1:
            psi = psi.unsqueeze(0)
        psi = psi.expand(y.shape[0], -1)
        assert psi.shape[1] == self.num_adain_params, (psi.shape, self.num_adain_params)
        chunks = list(psi.split(self.adain_sizes, dim=1))

        h = y
        for block in self.down:
            h = block(h)
        for block in self.res:
            h = block(h, chunks.pop(0))
        for block in self.up:
            h = block(h, chunks.pop(0)) if isinstance(block, ResBlockUp) else block(h)
        h = torch.relu(self.out_norm(h, chunks.pop(0)))
        return torch.tanh(self.out_conv(h))
