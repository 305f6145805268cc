"""Test helper: write random-initialised weights in the PUBLISHED file layouts.

No real weights can be downloaded in CI, so tests build a network with random initial weights, write its
state dict exactly as the public file is keyed (classifier heads included, as zero-stride tensors of the
published shape so the file stays a few bytes for them) and then load it back through the real
``resolve`` + ``load_state_dict_checked`` path.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from talkinghead.backbones import vgg19 as vgg19_mod
from talkinghead.backbones import vggface as vggface_mod
from talkinghead.backbones.inception import FIDInceptionV3
from talkinghead.backbones.weights import get_spec


def _he_init(module: nn.Module) -> nn.Module:
    """He-normal conv weights, so activations keep their scale through 13-94 random layers (PyTorch's
    default init shrinks them layer by layer until deep features are ~0 and every test is vacuous)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.normal_(m.bias, std=0.01)
    return module


def published_state(name: str, seed: int = 0, *, batches_tracked: bool = False) -> dict[str, torch.Tensor]:
    """A random state dict keyed like the public file ``name`` ("vgg19", "vgg19_caffe", "vggface",
    "inception_fid")."""
    torch.manual_seed(seed)
    if name in ("vgg19", "vgg19_caffe"):
        state = dict(_he_init(vgg19_mod.VGG19()).state_dict())
        # torchvision's file: classifier.{0,3,6}; jcjohnson's Caffe conversion (2017 torchvision): .{1,4,6}
        heads = vgg19_mod.CAFFE_CLASSIFIER_SHAPES if name == "vgg19_caffe" else vgg19_mod.CLASSIFIER_SHAPES
    elif name == "vggface":
        state = dict(_he_init(vggface_mod.VGGFace()).state_dict())
        heads = vggface_mod.CLASSIFIER_SHAPES
    elif name == "inception_fid":
        state = dict(_he_init(FIDInceptionV3()).state_dict())
        heads = {}
        if not batches_tracked:  # the 2018 file predates num_batches_tracked
            state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    else:
        raise KeyError(name)
    for key, shape in heads.items():
        state[key] = torch.zeros(()).expand(*shape)  # published shape, 1 stored element
    return state


def write_published(name: str, directory: Path, seed: int = 0, **kwargs: bool) -> Path:
    """Write ``published_state(name)`` to ``directory / <published file name>``; return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / get_spec(name).filename
    torch.save(published_state(name, seed, **kwargs), path)
    return path
