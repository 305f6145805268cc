"""InceptionV3 as FID defines it: the TF 2015-12-05 graph, as ported by pytorch-fid.

Published weights: ``pt_inception-2015-12-05-6726825d.pth`` (registry name ``"inception_fid"``). Its keys
follow torchvision's ``Inception3`` naming without the auxiliary head: for every convolution unit
``<unit>.conv.weight`` (no bias) and ``<unit>.bn.{weight,bias,running_mean,running_var}`` (BatchNorm eps
1e-3), units ``Conv2d_1a_3x3, Conv2d_2a_3x3, Conv2d_2b_3x3, Conv2d_3b_1x1, Conv2d_4a_3x3`` and the mixed
blocks ``Mixed_5b/5c/5d`` (A), ``Mixed_6a`` (B), ``Mixed_6b/6c/6d/6e`` (C, 7x7 widths 128/160/160/192),
``Mixed_7a`` (D), ``Mixed_7b/7c`` (E), whose branch units are named ``branch1x1``, ``branch5x5_1``, ...; and
``fc.weight`` (1008, 2048), ``fc.bias`` (1008,) (the TF graph's 1008 classes). 94 convolution units,
470 tensors + fc = 472 (``num_batches_tracked`` entries are accepted but not required).

The FID variant differs from torchvision's Inception in its pooling (TF semantics, which the FID reference
numbers depend on): the 3x3/stride-1 average pool in the A, C and first E blocks ignores the zero padding
(``count_include_pad=False``), and the last E block (``Mixed_7c``) pools its pool branch with a 3x3 MAX pool.

Input: the net was trained on 299x299 RGB scaled to [-1, 1]. ``forward`` takes images as torchmetrics'
``FrechetInceptionDistance(feature=module)`` hands them over: uint8 in [0, 255] (``normalize=False``) or
float in [0, 1] (``normalize=True``); it resizes to 299x299 (bilinear, ``align_corners=False``) and maps
to [-1, 1]. Output: the 2048-d pool3 features, ``(N, 2048)``.
"""
from __future__ import annotations

import os
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import FrozenBackbone, check_images
from .loading import load_state_dict_checked

FID_INPUT_SIZE = 299
NUM_CLASSES = 1008
POOL3_FEATURES = 2048


class BasicConv2d(nn.Module):
    """conv (no bias) -> BatchNorm(eps 1e-3) -> ReLU; keys ``conv.weight``, ``bn.*``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _pool3x3_same(x: Tensor, kind: Literal["avg", "max"]) -> Tensor:
    """3x3 stride-1 'same' pooling with TF semantics (average ignores the padded zeros)."""
    if kind == "max":
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1->5x5 | 1x1->3x3->3x3 | avgpool->1x1; out 224 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_pool3x3_same(x, "avg"))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """35->17 reduction (Mixed_6a): 3x3/2 | 1x1->3x3->3x3/2 | maxpool/2; out 384 + 96 + in channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)


class FIDInceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions of width ``channels_7x7``; out 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for unit in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = unit(bd)
        bp = self.branch_pool(_pool3x3_same(x, "avg"))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """17->8 reduction (Mixed_7a): 1x1->3x3/2 | 1x1->1x7->7x1->3x3/2 | maxpool/2; out 320 + 192 + in."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)


class FIDInceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 branches; out 2048 channels; ``pool``: "avg" (Mixed_7b), "max" (7c)."""

    def __init__(self, in_channels: int, pool: Literal["avg", "max"]) -> None:
        super().__init__()
        self.pool: Literal["avg", "max"] = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        s = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        bp = self.branch_pool(_pool3x3_same(x, self.pool))
        return torch.cat([b1, b3, bd, bp], 1)


class FIDInceptionV3(FrozenBackbone):
    """The FID feature network: images ``(N, 3, H, W)`` -> pool3 features ``(N, 2048)``.

    Drop-in ``feature=`` module for torchmetrics' ``FrechetInceptionDistance`` (it reads ``num_features``
    and calls ``forward`` on the raw update batch). Once frozen it never leaves eval mode, so a parent's
    ``.train()`` cannot switch its batch-norm to batch statistics.

    Args:
        resize_input: bilinearly resize to 299x299 first (what FID reference numbers assume).
    """

    num_features: int = POOL3_FEATURES

    def __init__(self, resize_input: bool = True) -> None:
        super().__init__()
        self.resize_input = resize_input
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        # The TF graph's 1008-way classifier: part of the published file, unused for FID features.
        self.fc = nn.Linear(POOL3_FEATURES, NUM_CLASSES)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], resize_input: bool = True) -> "FIDInceptionV3":
        """Build, load the published file at ``path`` (layout-checked) and freeze."""

        net = cls(resize_input=resize_input)
        load_state_dict_checked(net, path, "inception_fid")
        return net.freeze()

    def preprocess(self, images: Tensor) -> Tensor:
        """uint8 [0, 255] or float [0, 1] ``(N, 3, H, W)`` -> [-1, 1] floats, 299x299 if ``resize_input``.

        The result has the dtype of the network's weights (float32, or float64 after torchmetrics'
        ``set_dtype(torch.float64)`` converted the metric and this module with it).
        """
        check_images(images, "FIDInceptionV3", min_size=1 if self.resize_input else 75)
        dtype = self.Conv2d_1a_3x3.conv.weight.dtype
        if images.dtype == torch.uint8:
            x = images.to(dtype) / 255.0
        elif images.is_floating_point():
            lo, hi = float(images.min()), float(images.max())
            if lo < -1e-3 or hi > 1.0 + 1e-3:
                raise ValueError(f"FIDInceptionV3 takes float images in [0, 1] (or uint8 in [0, 255]); got "
                                 f"values in [{lo:.3g}, {hi:.3g}]: map [-1, 1] images with (x + 1) / 2")
            x = images.to(dtype)
        else:
            raise TypeError(f"FIDInceptionV3 takes uint8 or float images, got dtype {images.dtype}")
        if self.resize_input and tuple(x.shape[-2:]) != (FID_INPUT_SIZE, FID_INPUT_SIZE):
            x = F.interpolate(x, size=(FID_INPUT_SIZE, FID_INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    def forward(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` uint8 or [0, 1] float -> ``(N, 2048)`` pool3 features (in the weights' dtype)."""
        x = self.preprocess(images)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
