"""Building blocks shared by the embedder, generator and discriminator (written once, reused).

All weight layers are spectrally normalised (Miyato et al. 2018), as the paper does "for all convolutional
and fully connected layers in all the networks".  The blocks follow BigGAN's residual blocks (Brock et al.
2019) that the paper cites, with SAGAN's self-attention (Zhang et al. 2019).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.nets.spectral import is_spectral_normed, spectral_norm  # noqa: F401 - re-exported


def sn_conv(cin: int, cout: int, kernel: int = 3, bias: bool = True) -> nn.Module:
    """Spectrally normalised ``Conv2d`` with 'same' padding."""
    return spectral_norm(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias))


def sn_linear(fin: int, fout: int, bias: bool = True) -> nn.Module:
    """Spectrally normalised ``Linear``."""
    return spectral_norm(nn.Linear(fin, fout, bias=bias))


def normalize(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``gamma * IN(x) + beta`` for (B, C, H, W) ``x``, in ``x``'s dtype and memory format; ``gamma``, ``beta``
    broadcastable to (B, C, 1, 1).

    IN is ``nn.InstanceNorm2d``'s (biased variance over H, W; eps 1e-5), in fp32.  On channels-last activations it
    is two vectorised passes (mean, then the norm of ``x - mean``) and one multiply-add: ``nn.InstanceNorm2d``
    reshapes to (1, B*C, H, W), which copies them to NCHW and back, and ``torch.var_mean`` is a scalar loop on
    CPU; together they were a third of the generator's CPU time.  Contiguous (NCHW) activations go through
    ``F.instance_norm``, faster there.
    """
    d = x.float()  # a no-op in fp32; bf16/fp16 activations are normalised in fp32 and cast back
    if d.is_contiguous():  # NCHW (the plain path): torch's own kernel is the faster one there, backward included
        scale = gamma
        d = F.instance_norm(d, eps=eps)
    else:
        d = d - d.mean(dim=(2, 3), keepdim=True)
        var = torch.linalg.vector_norm(d, dim=(2, 3), keepdim=True).square() / (x.shape[2] * x.shape[3])
        scale = gamma * torch.rsqrt(var + eps)
    return torch.addcmul(beta.float(), d, scale).to(x.dtype)


class InstanceNorm(nn.Module):
    """Instance norm with a learned per-channel affine, (B, C, H, W) -> (B, C, H, W): ``nn.InstanceNorm2d(C,
    affine=True)``'s maths and parameter names (``weight``, ``bias``), computed by :func:`normalize`."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.weight[:, None, None], self.bias[:, None, None])


def up2(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x up-sampling, (B, C, H, W) -> (B, C, 2H, 2W), in ``x``'s memory format.

    ``F.interpolate`` is fast on channels-last tensors and slow on contiguous ones on CPU (5x at 16x128x32x32), where
    one broadcast copy does the same.
    """
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return F.interpolate(x, scale_factor=2, mode="nearest")
    b, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)


class AdaIN(nn.Module):
    """Adaptive instance norm: ``gamma * IN(x) + beta`` with (gamma, beta) given per sample.

    ``forward(x (B,C,H,W), params (B, 2C))``: ``params[:, :C]`` is the scale offset (gamma = 1 + it, so that
    zero parameters are the identity), ``params[:, C:]`` the bias.  The parameters come from the generator's
    projection ``P @ e_hat`` (meta-learning) or from the fine-tuned vector psi'.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    @property
    def num_params(self) -> int:
        return 2 * self.num_features

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        c = self.num_features
        assert params.shape[-1] == 2 * c, f"AdaIN({c}) needs {2 * c} params, got {params.shape[-1]}"
        return normalize(x, 1.0 + params[:, :c, None, None], params[:, c:, None, None])


class SelfAttention(nn.Module):
    """SAGAN self-attention: ``x + gamma * softmax(q^T k) v`` with gamma initialised to 0.

    (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = sn_conv(channels, inner, 1, bias=False)
        self.key = sn_conv(channels, inner, 1, bias=False)
        self.value = sn_conv(channels, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)  # (B, HW, C')
        k = self.key(x).flatten(2).transpose(1, 2)  # (B, HW, C')
        v = self.value(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        out = F.scaled_dot_product_attention(q, k, v, scale=1.0)  # SAGAN uses unscaled dot products
        return x + self.gamma * out.transpose(1, 2).reshape(b, c, h, w)


class ResBlockDown(nn.Module):
    """Residual down-sampling block, (B, Cin, H, W) -> (B, Cout, H/2, W/2).

    main: [IN] -> ReLU -> conv3x3 -> [IN] -> ReLU -> conv3x3 -> avgpool2;  skip: conv1x1 -> avgpool2, computed as
    avgpool2 -> conv1x1 (both are linear and act on different axes, so they commute: same result, 1/4 the work).
    ``norm=True`` adds instance norm (generator's encoder); the embedder and discriminator use none.
    ``preactivate=False`` skips the first norm/ReLU (first block, whose input is the raw image).
    """

    def __init__(self, cin: int, cout: int, norm: bool = False, preactivate: bool = True) -> None:
        super().__init__()
        self.preactivate = preactivate
        self.norm1 = InstanceNorm(cin) if norm and preactivate else nn.Identity()
        self.conv1 = sn_conv(cin, cout)
        self.norm2 = InstanceNorm(cout) if norm else nn.Identity()
        self.conv2 = sn_conv(cout, cout)
        self.skip = sn_conv(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(x)) if self.preactivate else x
        h = self.conv1(h)
        h = self.conv2(F.relu(self.norm2(h)))
        return F.avg_pool2d(h, 2) + self.skip(F.avg_pool2d(x, 2))


class ResBlock(nn.Module):
    """Residual block without resampling, (B, C, H, W) -> (B, C, H, W).

    With ``adain=True`` both norms are AdaIN and ``forward(x, params)`` takes (B, 2C + 2C) parameters;
    otherwise it has no norm (discriminator's last block) and ``forward(x)``.
    """

    def __init__(self, channels: int, adain: bool = False) -> None:
        super().__init__()
        self.adain = adain
        self.norm1 = AdaIN(channels) if adain else None
        self.conv1 = sn_conv(channels, channels)
        self.norm2 = AdaIN(channels) if adain else None
        self.conv2 = sn_conv(channels, channels)

    @property
    def num_adain_params(self) -> int:
        return self.norm1.num_params + self.norm2.num_params if self.adain else 0

    def forward(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        if self.adain:
            assert params is not None, "AdaIN block needs its parameters"
            p1, p2 = params.split([self.norm1.num_params, self.norm2.num_params], dim=1)
            h = self.conv1(F.relu(self.norm1(x, p1)))
            h = self.conv2(F.relu(self.norm2(h, p2)))
        else:
            h = self.conv2(F.relu(self.conv1(F.relu(x))))
        return x + h


class UpConv(nn.Module):
    """``conv3x3(up2(x))`` computed at the low resolution, (B, Cin, H, W) -> (B, Cout, 2H, 2W), for inference.

    Output pixel (2i + a, 2j + b) sees input rows i-1, i (a = 0) or i, i+1 (a = 1), and the same for columns: the
    3x3 kernel's taps that land on one repeated pixel are summed, which leaves a 2x2 kernel per phase (a, b).  The
    four phases run as one convolution with 4 Cout outputs on the zero-padded input, then interleave: 16 instead
    of 36 multiply-adds per output pixel and input channel, and no up-sampled copy of the input.  Same result up to
    float rounding (tested).  ``conv``: a plain (baked) 3x3 ``nn.Conv2d`` with padding 1.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        w = conv.weight.detach()
        assert w.shape[-2:] == (3, 3) and conv.padding == (1, 1) and conv.stride == (1, 1), conv

        def fold(k: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
            k0, k1, k2 = k.unbind(dim)
            return torch.stack([k0, k1 + k2], dim), torch.stack([k0 + k1, k2], dim)

        phases = [fold(rows, 3) for rows in fold(w, 2)]  # [a][b]: (Cout, Cin, 2, 2)
        weight = torch.cat([phases[a][b] for a in (0, 1) for b in (0, 1)])
        self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().repeat(4))
        self.out_channels = w.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        o = self.out_channels
        y = F.conv2d(F.pad(x, (1, 1, 1, 1)), self.weight, self.bias)  # (B, 4 Cout, H+1, W+1)
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        out = torch.empty(b, o, 2 * h, 2 * w, dtype=y.dtype, device=y.device, memory_format=fmt)
        for k, (a, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            out[:, :, a::2, c::2] = y[:, k * o : (k + 1) * o, a : a + h, c : c + w]
        return out


def fold_up_convs(module: nn.Module) -> nn.Module:
    """Give every ``ResBlockUp`` under ``module`` its :class:`UpConv` (in place; for a baked inference copy: the
    folded kernel is a snapshot of conv1's weight).  Returns ``module``."""
    for block in module.modules():
        if isinstance(block, ResBlockUp):
            block.up_conv1 = UpConv(block.conv1)
    return module


class ResBlockUp(nn.Module):
    """Residual up-sampling block with AdaIN, (B, Cin, H, W) -> (B, Cout, 2H, 2W).

    main: AdaIN -> ReLU -> up2 -> conv3x3 -> AdaIN -> ReLU -> conv3x3;  skip: up2 -> conv1x1, computed as
    conv1x1 -> up2 (nearest up-sampling copies pixels, so the two commute: same result, 1/4 the work).
    ``forward(x, params)`` takes (B, 2Cin + 2Cout) AdaIN parameters.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm1 = AdaIN(cin)
        self.conv1 = sn_conv(cin, cout)
        self.norm2 = AdaIN(cout)
        self.conv2 = sn_conv(cout, cout)
        self.skip = sn_conv(cin, cout, 1)
        self.up_conv1: UpConv | None = None  # inference: conv1(up2(.)) at the low resolution (fold_up_convs)

    @property
    def num_adain_params(self) -> int:
        return self.norm1.num_params + self.norm2.num_params

    def forward(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        p1, p2 = params.split([self.norm1.num_params, self.norm2.num_params], dim=1)
        h = F.relu(self.norm1(x, p1))
        h = self.conv1(up2(h)) if self.up_conv1 is None else self.up_conv1(h)
        h = self.conv2(F.relu(self.norm2(h, p2)))
        return h + up2(self.skip(x))


def channel_plan(num_blocks: int, base: int, maximum: int) -> list[int]:
    """Output channels of ``num_blocks`` down-sampling blocks: base, 2 base, 4 base, ... capped at ``maximum``."""
    return [min(base * 2**i, maximum) for i in range(num_blocks)]


def check_image_size(image_size: int, min_size: int = 16) -> int:
    """Image sizes must be powers of two (every block halves or doubles the resolution)."""
    if image_size < min_size or image_size & (image_size - 1):
        raise ValueError(f"image_size must be a power of two >= {min_size}, got {image_size}")
    return image_size.bit_length() - 1
