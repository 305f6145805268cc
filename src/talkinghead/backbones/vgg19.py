"""VGG19 (Simonyan & Zisserman, configuration E) laid out exactly as torchvision's ``vgg19().features``.

Two published weight files fit it; each was trained on its own input, which ``input_norm`` names:

* ``"caffe"`` (the paper's choice, ``loss=paper``): the ORIGINAL Caffe VGG19 of the VGG group
  (``VGG_ILSVRC_19_layers.caffemodel``) as J. Johnson converted it to PyTorch (github.com/jcjohnson/pytorch-vgg):
  ``vgg19-d01eb7cb.pth`` (registry name ``"vgg19_caffe"``; ``d01eb7cb`` is the sha256 prefix, torch.hub's
  convention). The file FSTH's perceptual loss loads. Input: BGR in [0, 255] minus the BGR mean
  (103.939, 116.779, 123.68), no std (the converter's README; Caffe reads images with OpenCV, in BGR).
  Keys: the ``features`` below plus the classifier of the 2017 torchvision ``VGG`` it was saved from,
  whose Dropout came FIRST: ``classifier.{1,4,6}.{weight,bias}`` with shapes (4096, 25088), (4096, 4096),
  (1000, 4096) (FSTH renames ``classifier.6`` to ``.7`` to load it into today's torchvision).
* ``"imagenet"``: torchvision's own ImageNet file ``vgg19-dcbb9e9d.pth`` (registry name ``"vgg19"``), trained
  by torchvision's reference recipe on RGB in [0, 1] minus (0.485, 0.456, 0.406) over (0.229, 0.224, 0.225).
  Keys: ``features`` plus ``classifier.{0,3,6}.{weight,bias}`` (same shapes).

Both share ``features.{i}.weight`` / ``.bias`` for the 16 convolutions at sequence indices 0, 2, 5, 7, 10, 12,
14, 16, 19, 21, 23, 25, 28, 30, 32, 34 (ReLUs and 2x2 pools between them carry no weights; indices run 0..36).
The feature extractor holds only ``features``; the classifier keys are checked for presence and shape, then
dropped (``include_classifier=True`` keeps them, in the file's layout). A file of the other variant is refused
with a message that says which one it is, so weights and input convention cannot be mixed up.

Feeding raw [0, 1] or [-1, 1] pixels to a net trained on 0-255 makes its activations, and a perceptual loss
on them, nearly vanish; that is why the input convention travels with the file.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from .base import FrozenBackbone, Pool, make_pool, run_layers, to_unit_range
from .loading import load_state_dict_checked, read_state_dict

#: torchvision's configuration "E": channel counts, "M" = 2x2 max-pool.
VGG19_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                    512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
#: ``features`` indices of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (the paper's "Conv1,6,11,20,29").
DEFAULT_LAYERS: tuple[int, ...] = (1, 6, 11, 20, 29)
#: The classifier head of torchvision's file ``vgg19-dcbb9e9d.pth``: key -> shape.
CLASSIFIER_SHAPES: dict[str, tuple[int, ...]] = {
    "classifier.0.weight": (4096, 512 * 7 * 7), "classifier.0.bias": (4096,),
    "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}
#: The classifier head of the Caffe conversion ``vgg19-d01eb7cb.pth`` (2017 torchvision: Dropout first).
CAFFE_CLASSIFIER_SHAPES: dict[str, tuple[int, ...]] = {
    "classifier.1.weight": (4096, 512 * 7 * 7), "classifier.1.bias": (4096,),
    "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
    "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,),
}

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

InputNorm = Literal["imagenet", "caffe"]
#: input convention -> registry name of the published file trained on it.
WEIGHT_FILES: dict[str, str] = {"caffe": "vgg19_caffe", "imagenet": "vgg19"}
#: The published file names of those registry entries (the registry in ``weights`` takes them from here).
PUBLISHED_FILENAMES: dict[str, str] = {"vgg19_caffe": "vgg19-d01eb7cb.pth", "vgg19": "vgg19-dcbb9e9d.pth"}


def make_vgg_layers(cfg: Sequence[int | str], pool: Pool = "max") -> list[nn.Module]:
    """Conv3x3(pad 1)+ReLU per integer, a 2x2 ``pool`` per ``"M"``: torchvision's ``features`` order."""
    layers: list[nn.Module] = []
    channels = 3
    for item in cfg:
        if item == "M":
            layers.append(make_pool(pool))
        else:
            # ReLU not in-place: a requested conv output must not be overwritten by the next layer.
            layers += [nn.Conv2d(channels, int(item), kernel_size=3, padding=1), nn.ReLU()]
            channels = int(item)
    return layers


class VGG19(FrozenBackbone):
    """VGG19 feature extractor.

    Args:
        input_norm: what the weights were trained on, which also names the file (see the module docstring):
            ``"caffe"`` for ``vgg19-d01eb7cb.pth`` (the paper's), ``"imagenet"`` for torchvision's
            ``vgg19-dcbb9e9d.pth`` (the default of this class, for backwards compatibility).
        include_classifier: also build ``classifier`` (fc 25088->4096->4096->1000, 124 M parameters) in the
            layout of that file, so that ``state_dict()`` is the full published layout. Feature extraction
            never needs it.
        pool: ``"max"`` (as trained) or ``"avg"`` (FSTH's perceptual loss) for the five 2x2 pools.
    """

    def __init__(self, input_norm: InputNorm = "imagenet", include_classifier: bool = False,
                 pool: Pool = "max") -> None:
        super().__init__()
        if input_norm not in WEIGHT_FILES:
            raise ValueError(f"input_norm must be 'imagenet' or 'caffe', got {input_norm!r}")
        self.input_norm: InputNorm = input_norm
        self.pool: Pool = pool
        self.features = nn.Sequential(*make_vgg_layers(VGG19_CFG, pool))
        self.classifier: nn.Sequential | None = None
        if include_classifier and input_norm == "imagenet":
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(),
                nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(),
                nn.Linear(4096, 1000))
        elif include_classifier:  # the 2017 torchvision layout the Caffe conversion was saved in
            self.classifier = nn.Sequential(
                nn.Dropout(), nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True),
                nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True),
                nn.Linear(4096, 1000))
        if input_norm == "imagenet":
            mean, scale = torch.tensor(IMAGENET_MEAN_RGB), 1.0 / torch.tensor(IMAGENET_STD_RGB)
        else:
            mean, scale = torch.tensor(CAFFE_MEAN_BGR[::-1]), torch.full((3,), 255.0)  # RGB order here
        # imagenet: (x01 - mean) * (1 / std); caffe: x01 * 255 - mean, then RGB->BGR. Not in the weight file.
        self.register_buffer("_mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_scale", scale.view(1, 3, 1, 1), persistent=False)

    @property
    def weight_file(self) -> str:
        """Registry name of the published file these weights and this input convention belong to."""
        return WEIGHT_FILES[self.input_norm]

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        input_norm: InputNorm = "imagenet",
        include_classifier: bool = False,
        pool: Pool = "max",
    ) -> "VGG19":
        """Build and load the published file at ``path`` (layout-checked); not yet frozen.

        Raises:
            WeightLayoutError: the file is not the published layout of ``input_norm``'s file; when it is the
                other VGG19 file, the message says so (its weights want the other input convention).
        """
        net = cls(input_norm=input_norm, include_classifier=include_classifier, pool=pool)
        heads = CAFFE_CLASSIFIER_SHAPES if input_norm == "caffe" else CLASSIFIER_SHAPES
        other = "imagenet" if input_norm == "caffe" else "caffe"
        other_heads = CLASSIFIER_SHAPES if input_norm == "caffe" else CAFFE_CLASSIFIER_SHAPES
        state = read_state_dict(path, net.weight_file)
        hint = None
        if set(other_heads) <= set(state) and not set(heads) <= set(state):
            hint = (f"it is the other VGG19 file ({PUBLISHED_FILENAMES[WEIGHT_FILES[other]]}, trained on "
                    f"{other!r} input): set vgg19_input_norm={other} to use it, or give "
                    f"{PUBLISHED_FILENAMES[net.weight_file]}")
        load_state_dict_checked(net, path, net.weight_file, drop=None if include_classifier else heads,
                                state=state, hint=hint)
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
