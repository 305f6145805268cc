"""VGG-Face (Parkhi, Vedaldi & Zisserman, BMVC 2015): VGG16 trained to classify 2622 identities.

Published weights: ``vgg_face_dag.pth`` (registry name ``"vggface"``), S. Albanie's conversion of the
MatConvNet model (pytorch-mcn). Its state dict is flat, one entry per named layer, no ``features.`` prefix:
``conv{b}_{i}.weight`` / ``.bias`` for the 13 convolutions conv1_1, conv1_2, conv2_1, conv2_2, conv3_1..3,
conv4_1..3, conv5_1..3 (3x3, padding 1; ReLUs ``relu{b}_{i}`` and 2x2 pools ``pool{b}`` carry no weights) and
``fc6`` (4096, 25088), ``fc7`` (4096, 4096), ``fc8`` (2622, 4096) with biases: 32 keys.

The layers are registered here under those very names, in VGG16 order, so ``state_dict()`` keys are the
published ones; ``features`` is the same modules as an index-addressable sequence (indices 0..30, pools
at 4, 9, 16, 23, 30) and the default activations 1, 6, 11, 18, 25 are relu1_1..relu5_1 (the paper's
"Conv1,6,11,18,25 VGGFace layers"). The fc head is checked for presence/shape then dropped unless
``include_classifier=True``.

Input convention: the model's own meta says ``mean = [129.186279296875, 104.76238250732422,
93.59396362304688]``, ``std = [1, 1, 1]``, ``imageSize = [224, 224, 3]``: it was trained (Caffe, then
converted via MatConvNet which keeps RGB order) on RGB pixels in [0, 255] minus that per-channel RGB mean,
no division. (The original Caffe release lists the same mean in BGR order: 93.59, 104.76, 129.19.)
So images in [-1, 1] are mapped to [0, 255] and the mean subtracted; ``mean_rgb``/``pixel_scale`` are options
for other conversions.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import FrozenBackbone, Pool, make_pool, run_layers, to_unit_range
from .loading import load_state_dict_checked

#: meta['mean'] of vgg_face_dag (RGB, 0-255 scale).
VGGFACE_MEAN_RGB: tuple[float, float, float] = (129.186279296875, 104.76238250732422, 93.59396362304688)
#: (block, number of convs, channels) of VGG16 / VGG-Face.
VGG16_BLOCKS: tuple[tuple[int, int, int], ...] = (
    (1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))
#: feature-sequence indices of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1.
DEFAULT_LAYERS: tuple[int, ...] = (1, 6, 11, 18, 25)
NUM_IDENTITIES = 2622
CLASSIFIER_SHAPES: dict[str, tuple[int, ...]] = {
    "fc6.weight": (4096, 512 * 7 * 7), "fc6.bias": (4096,),
    "fc7.weight": (4096, 4096), "fc7.bias": (4096,),
    "fc8.weight": (NUM_IDENTITIES, 4096), "fc8.bias": (NUM_IDENTITIES,),
}


def vgg16_layer_names() -> list[str]:
    """``["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", ..., "pool5"]`` (31 names, VGG16 order)."""
    names: list[str] = []
    for block, n_conv, _ in VGG16_BLOCKS:
        for i in range(1, n_conv + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


class VGGFace(FrozenBackbone):
    """VGG-Face feature extractor with the ``vgg_face_dag`` key layout.

    Args:
        mean_rgb: per-channel RGB mean subtracted on the ``pixel_scale`` scale (default: the model's meta).
        pixel_scale: the value of a full-intensity pixel the net was trained with (255).
        include_classifier: also build fc6/fc7/fc8 (fc6 alone is 103 M parameters) for the full layout.
        pool: ``"max"`` (as trained) or ``"avg"`` (FSTH's perceptual loss) for the five 2x2 pools.
    """

    def __init__(
        self,
        mean_rgb: Sequence[float] = VGGFACE_MEAN_RGB,
        pixel_scale: float = 255.0,
        include_classifier: bool = False,
        pool: Pool = "max",
    ) -> None:
        super().__init__()
        if len(mean_rgb) != 3:
            raise ValueError(f"mean_rgb needs 3 values (R, G, B), got {list(mean_rgb)}")
        channels = 3
        widths = {b: c for b, _, c in VGG16_BLOCKS}
        for name in vgg16_layer_names():
            if name.startswith("conv"):
                out = widths[int(name[4])]
                self.add_module(name, nn.Conv2d(channels, out, kernel_size=3, stride=1, padding=1))
                channels = out
            elif name.startswith("relu"):
                # not in-place: a requested conv output must not be overwritten by the next layer
                self.add_module(name, nn.ReLU())
            else:
                self.add_module(name, make_pool(pool))
        self.layer_names: tuple[str, ...] = tuple(vgg16_layer_names())
        self.pool: Pool = pool
        self.include_classifier = include_classifier
        if include_classifier:
            self.fc6 = nn.Linear(512 * 7 * 7, 4096)
            self.fc7 = nn.Linear(4096, 4096)
            self.fc8 = nn.Linear(4096, NUM_IDENTITIES)
        self.pixel_scale = float(pixel_scale)
        self.register_buffer("_mean", torch.tensor([float(m) for m in mean_rgb]).view(1, 3, 1, 1),
                             persistent=False)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: object) -> "VGGFace":
        """Build and load the published file at ``path`` (layout-checked); not yet frozen."""
        net = cls(**kwargs)  # type: ignore[arg-type]
        drop = None if net.include_classifier else CLASSIFIER_SHAPES
        load_state_dict_checked(net, path, "vggface", drop=drop)
        return net

    @property
    def features(self) -> list[nn.Module]:
        """The 31 feature layers in VGG16 order (same module objects, no extra state-dict keys)."""
        return [getattr(self, n) for n in self.layer_names]

    def preprocess(self, images: Tensor, value_range: tuple[float, float] = (-1.0, 1.0)) -> Tensor:
        """RGB images in ``value_range`` ``(B, 3, H, W)`` -> RGB 0-255 minus the meta mean, same shape."""
        return to_unit_range(images, value_range) * self.pixel_scale - self._mean

    def activations(
        self,
        images: Tensor,
        layers: Sequence[int] = DEFAULT_LAYERS,
        value_range: tuple[float, float] | None = (-1.0, 1.0),
    ) -> list[Tensor]:
        """Outputs of ``features[i]`` for ``i`` in ``layers`` (0..30; default relu1_1..relu5_1).

        Args:
            images: ``(B, 3, H, W)``; RGB in ``value_range`` (None: already preprocessed).

        Returns:
            one ``(B, C_l, H / 2^p_l, W / 2^p_l)`` tensor per layer (sorted ascending).
        """
        prep = None if value_range is None else (lambda x: self.preprocess(x, value_range))
        return run_layers(self.features, images, layers, prep, "VGGFace")

    def forward(self, images: Tensor, value_range: tuple[float, float] | None = (-1.0, 1.0)) -> list[Tensor]:
        """``activations(images)`` at the default layers."""
        return self.activations(images, DEFAULT_LAYERS, value_range)
