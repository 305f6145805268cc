"""VGG19 (Simonyan & Zisserman, configuration E) laid out exactly as torchvision's ``vgg19().features``.

Published weights: torchvision's ImageNet file ``vgg19-dcbb9e9d.pth`` (registry name ``"vgg19"``). Its keys
are ``features.{i}.weight`` / ``features.{i}.bias`` for the 16 convolutions at sequence indices
0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34 (ReLUs and 2x2 max-pools between them carry no
weights; indices run 0..36) plus the classifier head ``classifier.{0,3,6}.{weight,bias}`` with shapes
(4096, 25088), (4096, 4096), (1000, 4096). The feature extractor here holds only ``features``; the classifier
keys are checked for presence and shape, then dropped (``include_classifier=True`` keeps them).

Input convention (``input_norm``):

* ``"imagenet"`` (default): RGB in [0, 1], minus mean (0.485, 0.456, 0.406), over std (0.229, 0.224, 0.225).
  The torchvision weights were TRAINED on exactly this (torchvision's ImageNet reference recipe), so this
  is the only correct choice for ``vgg19-dcbb9e9d.pth``.
* ``"caffe"``: BGR in [0, 255] minus mean BGR (103.939, 116.779, 123.68), no std. This is what the ORIGINAL
  Caffe VGG19 (``VGG_ILSVRC_19_layers.caffemodel`` and its PyTorch conversions) was trained on; choose it
  only with such a converted file. Feeding raw [0, 1] or [-1, 1] pixels to a net trained on 0-255 makes
  its activations, and a perceptual loss on them, nearly vanish.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from .base import FrozenBackbone, run_layers, to_unit_range

#: torchvision's configuration "E": channel counts, "M" = 2x2 max-pool.
VGG19_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                    512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
#: ``features`` indices of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (the paper's "Conv1,6,11,20,29").
DEFAULT_LAYERS: tuple[int, ...] = (1, 6, 11, 20, 29)
#: The classifier head of the published file: key -> shape.
CLASSIFIER_SHAPES: dict[str, tuple[int, ...]] = {
    "classifier.0.weight": (4096, 512 * 7 * 7), "classifier.0.bias": (4096,),
    "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

InputNorm = Literal["imagenet", "caffe"]


def make_vgg_layers(cfg: Sequence[int | str]) -> list[nn.Module]:
    """Conv3x3(pad 1)+ReLU per integer, MaxPool2d(2, 2) per ``"M"``: torchvision's ``features`` order."""
    layers: list[nn.Module] = []
    channels = 3
    for item in cfg:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            # ReLU not in-place: a requested conv output must not be overwritten by the next layer.
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            channels = int(item)
    return layers


class VGG19(FrozenBackbone):
    """VGG19 feature extractor.

    Args:
        input_norm: what the weights were trained on, see the module docstring (default ``"imagenet"``,
            correct for torchvision's ``vgg19-dcbb9e9d.pth``).
        include_classifier: also build ``classifier`` (fc 25088->4096->4096->1000, 124 M parameters) so that
            ``state_dict()`` is the full published layout. Feature extraction never needs it.
    """

    def __init__(self, input_norm: InputNorm = "imagenet", include_classifier: bool = False) -> None:
        super().__init__()
        if input_norm not in ("imagenet", "caffe"):
            raise ValueError(f"input_norm must be 'imagenet' or 'caffe', got {input_norm!r}")
        self.input_norm: InputNorm = input_norm
        self.features = nn.Sequential(*make_vgg_layers(VGG19_CFG))
        self.classifier: nn.Sequential | None = None
        if include_classifier:
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
                nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
                nn.Linear(4096, 1000))
        if input_norm == "imagenet":
            mean, scale = torch.tensor(IMAGENET_MEAN_RGB), 1.0 / torch.tensor(IMAGENET_STD_RGB)
        else:
            mean, scale = torch.tensor(CAFFE_MEAN_BGR[::-1]), torch.full((3,), 255.0)  # RGB order here
        # imagenet: (x01 - mean) * (1 / std); caffe: x01 * 255 - mean, then RGB->BGR. Not in the weight file.
        self.register_buffer("_mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_scale", scale.view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        input_norm: InputNorm = "imagenet",
        include_classifier: bool = False,
    ) -> "VGG19":
        """Build and load the published file at ``path`` (layout-checked); not yet frozen."""
        from .weights import load_state_dict_checked

        net = cls(input_norm=input_norm, include_classifier=include_classifier)
        load_state_dict_checked(net, path, "vgg19", drop=None if include_classifier else CLASSIFIER_SHAPES)
        return net

    def preprocess(self, images: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
        """RGB images in ``value_range`` ``(B, 3, H, W)`` -> the network's trained input ``(B, 3, H, W)``."""
        x = to_unit_range(images, value_range)
        if self.input_norm == "imagenet":
            return (x - self._mean) * self._scale
        return (x * self._scale - self._mean).flip(1)  # RGB 0-255 minus mean, then to BGR

    def activations(
        self,
        images: Tensor,
        layers: Sequence[int] = DEFAULT_LAYERS,
        value_range: tuple[float, float] | None = (-1.0, 1.0),
    ) -> list[Tensor]:
        """Outputs of ``features[i]`` for ``i`` in ``layers`` (sorted ascending).

        Args:
            images: ``(B, 3, H, W)``; RGB in ``value_range`` (None: already preprocessed).
            layers: ``features`` indices in 0..36 (default relu1_1..relu5_1 = 1, 6, 11, 20, 29).

        Returns:
            one ``(B, C_l, H / 2^p_l, W / 2^p_l)`` tensor per layer, ``p_l`` = pools before layer ``l``.
        """
        prep = None if value_range is None else (lambda x: self.preprocess(x, value_range))
        return run_layers(list(self.features), images, layers, prep, "VGG19")

    def forward(self, images: Tensor, value_range: tuple[float, float] | None = (-1.0, 1.0)) -> list[Tensor]:
        """``activations(images)`` at the default layers."""
        return self.activations(images, DEFAULT_LAYERS, value_range)
