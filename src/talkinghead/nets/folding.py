"""Fixed-ψ forms of the paper generator's layers: AdaIN with one person's ψ' folded in, and exporter-friendly forms
of the up-convolution and the self-attention (the same maths, tested in tests/test_export.py).

:meth:`talkinghead.nets.Generator.folded` builds :class:`FoldedGenerator` from them: after fine-tuning ψ' is fixed,
so an avatar is a function of the landmark image only, which ``make export`` writes as ONNX.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.nets.layers import AdaIN, ResBlockUp, SelfAttention, UpConv, normalize


class FoldedAdaIN(AdaIN):
    """AdaIN(C) with its parameters fixed: ``gamma * IN(x) + beta``, (B, C, H, W) -> (B, C, H, W).

    ``params``: (2C,) the slice of ψ' this AdaIN takes (gamma = 1 + params[:C], beta = params[C:]).  ``forward(x,
    params)`` ignores ``params``: the generator still splits its ψ into per-layer chunks, which then go unused (and
    the exporter drops them).
    """

    def __init__(self, num_features: int, params: torch.Tensor) -> None:
        super().__init__(num_features)
        c = num_features
        assert params.shape == (2 * c,), (params.shape, c)
        self.register_buffer("gamma", (1.0 + params[:c]).reshape(1, c, 1, 1).clone())
        self.register_buffer("beta", params[c:].reshape(1, c, 1, 1).clone())

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        return normalize(x, self.gamma, self.beta)


class OnnxUpConv(nn.Module):
    """:class:`talkinghead.nets.layers.UpConv` (B, Cin, H, W) -> (B, Cout, 2H, 2W) with its four phases interleaved
    by one stack + reshape (an exporter-friendly form of its strided writes; the same numbers)."""

    def __init__(self, up: UpConv) -> None:
        super().__init__()
        self.register_buffer("weight", up.weight.contiguous())
        self.register_buffer("bias", up.bias)
        self.out_channels = up.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, h, w = x.shape
        o = self.out_channels
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias)  # (B, 4 Cout, H+1, W+1), phases (a, b)
        phases = [y[:, k * o : (k + 1) * o, a : a + h, b : b + w] for k, (a, b) in
                  enumerate(((0, 0), (0, 1), (1, 0), (1, 1)))]
        t = torch.stack(phases, 2).reshape(-1, o, 2, 2, h, w)  # (B, Cout, a, b, H, W)
        return t.permute(0, 1, 4, 2, 5, 3).reshape(-1, o, 2 * h, 2 * w)  # pixel (2i + a, 2j + b)


class OnnxSelfAttention(nn.Module):
    """:class:`talkinghead.nets.layers.SelfAttention` (B, C, H, W) -> (B, C, H, W) as two matmuls (the same maths,
    SAGAN's unscaled dot products), sharing the baked 1x1 convolutions and gamma."""

    def __init__(self, attn: SelfAttention) -> None:
        super().__init__()
        self.query, self.key, self.value, self.gamma = attn.query, attn.key, attn.value, attn.gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        q, k, v = (f(x).flatten(2) for f in (self.query, self.key, self.value))  # (B, C', HW), (B, C', HW), (B, C, HW)
        attn = torch.softmax(q.transpose(1, 2) @ k, dim=-1)  # (B, HW, HW): row i attends over columns j
        return x + self.gamma * (v @ attn.transpose(1, 2)).reshape(-1, c, h, w)


class FoldedGenerator(nn.Module):
    """A paper generator with ψ' folded in: ``forward(landmark images (N, 3, S, S) in [-1, 1]) -> (N, 3, S, S)``.

    ``generator``: a ``talkinghead.nets.Generator`` (left untouched: its ``inference_copy`` is folded); ``psi``:
    (num_adain_params,) ψ'.  Every AdaIN becomes a :class:`FoldedAdaIN` (gamma = 1 + ψ'[:C], beta = ψ'[C:]), the
    up-convolutions :class:`OnnxUpConv` and the attention :class:`OnnxSelfAttention`.
    """

    def __init__(self, generator: nn.Module, psi: torch.Tensor) -> None:
        super().__init__()
        g = generator.inference_copy().float()
        chunks = list(psi.detach().float().reshape(-1).split(g.adain_sizes))
        # the AdaIN users in the order Generator.forward hands out the chunks: res blocks, up blocks, out_norm
        users = [b for b in g.res] + [b for b in g.up if isinstance(b, ResBlockUp)]
        assert len(chunks) == len(users) + 1, (len(chunks), len(users))
        for block, chunk in zip(users, chunks):
            n1 = block.norm1.num_params
            block.norm1 = FoldedAdaIN(block.norm1.num_features, chunk[:n1])
            block.norm2 = FoldedAdaIN(block.norm2.num_features, chunk[n1:])
        g.out_norm = FoldedAdaIN(g.out_norm.num_features, chunks[-1])
        for blocks in (g.down, g.up):
            for i, block in enumerate(blocks):
                if isinstance(block, SelfAttention):
                    blocks[i] = OnnxSelfAttention(block)
                elif isinstance(block, ResBlockUp) and block.up_conv1 is not None:
                    block.up_conv1 = OnnxUpConv(block.up_conv1)
        self.generator = g
        self.image_size = int(g.image_size)
        # what Generator.forward splits (the chunks go unused: the values live in the FoldedAdaINs)
        self.register_buffer("psi", torch.zeros(1, g.num_adain_params))

    def forward(self, landmarks: torch.Tensor) -> torch.Tensor:
        return self.generator(landmarks, psi=self.psi)
