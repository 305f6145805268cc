"""The content (perceptual) loss L_CNT of Zakharov et al. 2019 (Section 3.2).

    L_CNT(x, x̂) = w_19 · Σ_l ‖VGG19_l(x̂) − VGG19_l(x)‖_1  +  w_F · Σ_l ‖VGGFace_l(x̂) − VGGFace_l(x)‖_1

with the paper's layers relu1_1..relu5_1 (VGG19 ``features`` indices 1, 6, 11, 20, 29; VGGFace indices 1, 6,
11, 18, 25), ``‖·‖_1`` the mean absolute difference over a layer's elements, and the paper's weights
w_19 = 1.5e-1, w_F = 2.5e-2. Images enter in [-1, 1]; each backbone converts them to what its weights were
trained on (see ``talkinghead.backbones.vgg19`` / ``.vggface``).

Calibration. The paper's weights were set for the Caffe-trained networks ("we use Caffe trained versions for
both"), whose inputs are 0-255 pixels: its VGG19 is therefore the Caffe VGG19 ``vgg19-d01eb7cb.pth`` fed BGR
0-255 minus the BGR mean (``vgg19_input_norm="caffe"``), not torchvision's ImageNet-normalised one, whose
input (and so its activations) lives on a much smaller scale, so that 1.5e-1 would weigh a far weaker term. Where the paper is silent this
follows its authors' code (FSTH, ``criterions/common/perceptual_loss.py`` of shrubb/latent-pose-reenactment):
each layer's term is ``F.l1_loss`` (mean over its elements), the layers are summed with equal weight, the
real image is detached, and the pools are 2x2 AVERAGE pools (``pool="avg"``; FSTH swaps every max-pool).
Deliberate differences from FSTH: FSTH sums 13 ReLU outputs (relu1_1..relu5_1 of VGG19, relu1_1..relu5_3 of
VGG16) where the paper names 5 per network, and FSTH subtracts the BGR mean from RGB channels without
reordering them (its frames are RGB), which is not the convention either Caffe network was trained on.

The backbones are frozen (eval, no parameter gradients; gradients do flow to x̂). A weight of 0 means
that backbone is neither built nor loaded, so a user without its file can turn the term off.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones.base import Pool, check_images
from ..backbones.vgg19 import DEFAULT_LAYERS as VGG19_LAYERS
from ..backbones.vgg19 import VGG19
from ..backbones.vgg19 import WEIGHT_FILES as VGG19_FILES
from ..backbones.vggface import DEFAULT_LAYERS as VGGFACE_LAYERS
from ..backbones.vggface import VGGFace
from ..backbones.weights import resolve

#: The paper's weights of the two terms.
PAPER_WEIGHT_VGG19 = 1.5e-1
PAPER_WEIGHT_VGGFACE = 2.5e-2
#: The paper's VGG19 input: the Caffe network's (BGR 0-255 minus mean), from ``vgg19-d01eb7cb.pth``.
PAPER_VGG19_INPUT_NORM = "caffe"
#: FSTH's pooling inside both networks (the paper does not say).
PAPER_POOL: Pool = "avg"
#: What a loss config without ``vgg19_input_norm`` / ``vgg_pool`` (saved before they existed) was trained with.
LEGACY_VGG19_INPUT_NORM = "imagenet"
LEGACY_POOL: Pool = "max"
#: Smallest image side accepted: relu5_1 sits after 4 2x2 pools, 32 px -> 2x2 there.
MIN_SIZE = 32


def feature_l1(fake_feats: Sequence[Tensor], real_feats: Sequence[Tensor]) -> Tensor:
    """Σ_l mean |f_l(x̂) − f_l(x)| over matching lists of activations; a scalar."""
    if len(fake_feats) != len(real_feats):
        raise ValueError(f"got {len(fake_feats)} fake and {len(real_feats)} real activation maps")
    return torch.stack([F.l1_loss(a.float(), b.float()) for a, b in zip(fake_feats, real_feats)]).sum()  # fp32


class ContentLoss(nn.Module):
    """L_CNT with frozen VGG19 and VGGFace.

    Args:
        weight_vgg19: w_19 (0 = the VGG19 term is off, its weights are not needed).
        weight_vggface: w_F (0 = the VGGFace term is off).
        vgg19_weights: path of the VGG19 file of ``vgg19_input_norm`` (``vgg19-d01eb7cb.pth`` for "caffe",
            ``vgg19-dcbb9e9d.pth`` for "imagenet"); None = look in the weights directory.
        vggface_weights: path of ``vgg_face_dag.pth``; None = look in the weights directory.
        weights_dir: the weights directory (None: ``$TALKINGHEAD_WEIGHTS`` or ``weights/``).
        vgg19_layers / vggface_layers: feature indices (default: the paper's relu1_1..relu5_1).
        vgg19_input_norm: "caffe" (the paper's Caffe VGG19) or "imagenet" (torchvision's), see ``VGG19``; it
            also selects which file is loaded, and a file of the other kind is refused.
        pool: "avg" (FSTH) or "max" (as the networks were trained) for the 2x2 pools of both networks.
        config_key_vgg19 / config_key_vggface: the config keys named in a missing-weights error.
        vgg19 / vggface: backbones built by the caller instead of loaded from files (``make bench`` times
            random-weight ones when the files are absent, and says so; training never does).
        vggface_zoom: VGGFace sees the central 1/zoom of each frame resized back to the frame's size (FSTH's
            ``criterions/idt_embed.py`` crop, 1.8: the face box); None or 1: the whole frame.

    The frozen weights are kept out of ``state_dict()`` (see ``FrozenBackbone.freeze``): checkpoints stay
    small and the public weights are always reloaded from their files.
    """

    def __init__(
        self,
        weight_vgg19: float = PAPER_WEIGHT_VGG19,
        weight_vggface: float = PAPER_WEIGHT_VGGFACE,
        vgg19_weights: str | os.PathLike[str] | None = None,
        vggface_weights: str | os.PathLike[str] | None = None,
        weights_dir: str | os.PathLike[str] | None = None,
        vgg19_layers: Sequence[int] = VGG19_LAYERS,
        vggface_layers: Sequence[int] = VGGFACE_LAYERS,
        vgg19_input_norm: str = PAPER_VGG19_INPUT_NORM,
        pool: Pool = PAPER_POOL,
        config_key_vgg19: str = "loss.weights.content_vgg19",
        config_key_vggface: str = "loss.weights.content_vggface",
        vgg19: VGG19 | None = None,
        vggface: VGGFace | None = None,
        vggface_zoom: float | None = None,
    ) -> None:
        super().__init__()
        if weight_vgg19 < 0 or weight_vggface < 0:
            raise ValueError(f"content loss weights must be >= 0, got vgg19={weight_vgg19}, "
                             f"vggface={weight_vggface}")
        if vggface_zoom is not None and not float(vggface_zoom) >= 1.0:
            raise ValueError(f"vggface_zoom must be >= 1 (1/zoom of the frame, centred) or null, got {vggface_zoom}")
        self.vggface_zoom = None if vggface_zoom is None or float(vggface_zoom) == 1.0 else float(vggface_zoom)
        self.weight_vgg19 = float(weight_vgg19)
        self.weight_vggface = float(weight_vggface)
        self.vgg19_layers = tuple(int(i) for i in vgg19_layers)
        self.vggface_layers = tuple(int(i) for i in vggface_layers)
        self.vgg19: VGG19 | None = None
        self.vggface: VGGFace | None = None
        if vgg19 is not None or vggface is not None:  # built by the caller (make bench times random-weight ones)
            self.vgg19 = vgg19.freeze(in_state_dict=False) if self.weight_vgg19 > 0 and vgg19 is not None else None
            self.vggface = (vggface.freeze(in_state_dict=False)
                            if self.weight_vggface > 0 and vggface is not None else None)
            return
        if vgg19_input_norm not in VGG19_FILES:
            raise ValueError(f"vgg19_input_norm must be one of {sorted(VGG19_FILES)}, got {vgg19_input_norm!r}")
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        if self.weight_vgg19 > 0:
            path = resolve(VGG19_FILES[vgg19_input_norm], vgg19_weights, config_key=config_key_vgg19,
                           directory=weights_dir)
            self.vgg19 = VGG19.from_file(path, input_norm=vgg19_input_norm,  # type: ignore[arg-type]
                                         pool=pool).freeze(in_state_dict=False)
        if self.weight_vggface > 0:
            path = resolve("vggface", vggface_weights, config_key=config_key_vggface, directory=weights_dir)
            self.vggface = VGGFace.from_file(path, pool=pool).freeze(in_state_dict=False)

    def terms(self, fake: Tensor, real: Tensor) -> dict[str, Tensor]:
        """The weighted terms ``{"content_vgg19": ..., "content_vggface": ...}`` (see ``content_loss``)."""
        return content_loss_terms(fake, real, self.vgg19, self.vggface, self.weight_vgg19,
                                  self.weight_vggface, self.vgg19_layers, self.vggface_layers, self.vggface_zoom)

    def forward(self, fake: Tensor, real: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``(L_CNT, terms)``: the scalar total and the weighted terms (for logging term by term)."""
        parts = self.terms(fake, real)
        return parts["content_vgg19"] + parts["content_vggface"], parts


def zoom_centre(images: Tensor, zoom: float | None) -> Tensor:
    """The central 1/zoom of every image resized back to its size, (B, C, H, W) -> (B, C, H, W): FSTH's
    ``crop_and_resize`` with its fixed box (``criterions/idt_embed.py``: ``crop_factor = 1 / 1.8``), the same
    affine grid, bilinear samples and reflection padding.  ``zoom`` None or 1: the images unchanged."""
    if zoom is None or zoom == 1.0:
        return images
    theta = images.new_zeros(images.shape[0], 2, 3, dtype=torch.float32)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zoom
    grid = F.affine_grid(theta, list(images.shape), align_corners=False).to(images.dtype)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    channels_last = images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out  # the backbone's layout


def content_loss_terms(
    fake: Tensor,
    real: Tensor,
    vgg19: VGG19 | None,
    vggface: VGGFace | None,
    weight_vgg19: float = PAPER_WEIGHT_VGG19,
    weight_vggface: float = PAPER_WEIGHT_VGGFACE,
    vgg19_layers: Sequence[int] = VGG19_LAYERS,
    vggface_layers: Sequence[int] = VGGFACE_LAYERS,
    vggface_zoom: float | None = None,
) -> dict[str, Tensor]:
    """The weighted terms ``{"content_vgg19": ..., "content_vggface": ...}``; a term that is off is 0.

    Args:
        fake: x̂, generated images ``(B, 3, H, W)`` in [-1, 1], H, W >= 32; gradients flow to it.
        real: x, ground truth ``(B, 3, H, W)`` in [-1, 1]; a constant target (no gradient).
        vgg19 / vggface: loaded, frozen backbones; None only where the term's weight is 0.
        vggface_zoom: VGGFace compares the central 1/zoom of both (``zoom_centre``); None: the whole frames.
    """
    if (vgg19 is None and weight_vgg19 > 0) or (vggface is None and weight_vggface > 0):
        raise ValueError("content loss: a term with weight > 0 needs its backbone (pass it, or set weight 0)")
    check_images(fake, "content loss", min_size=MIN_SIZE)
    if fake.shape != real.shape:
        raise ValueError(f"content loss needs fake and real of one shape, got {tuple(fake.shape)} "
                         f"and {tuple(real.shape)}")
    real = real.detach()
    out = {"content_vgg19": fake.new_zeros(()), "content_vggface": fake.new_zeros(())}
    for key, net, weight, layers in (("content_vgg19", vgg19, weight_vgg19, vgg19_layers),
                                     ("content_vggface", vggface, weight_vggface, vggface_layers)):
        if net is None or weight == 0:
            continue
        a, b = (zoom_centre(fake, vggface_zoom), zoom_centre(real, vggface_zoom)) if net is vggface else (fake, real)
        with torch.no_grad():
            target = net.activations(b, layers)
        out[key] = weight * feature_l1(net.activations(a, layers), target)
    return out


def content_loss(
    fake: Tensor,
    real: Tensor,
    vgg19: VGG19 | None,
    vggface: VGGFace | None,
    weight_vgg19: float = PAPER_WEIGHT_VGG19,
    weight_vggface: float = PAPER_WEIGHT_VGGFACE,
    vgg19_layers: Sequence[int] = VGG19_LAYERS,
    vggface_layers: Sequence[int] = VGGFACE_LAYERS,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Function form of ``ContentLoss`` with caller-owned backbones: ``(L_CNT, terms)``."""
    parts = content_loss_terms(fake, real, vgg19, vggface, weight_vgg19, weight_vggface,
                               vgg19_layers, vggface_layers)
    return parts["content_vgg19"] + parts["content_vggface"], parts


def content_loss_from_config(loss_cfg: Mapping[str, Any], *, unit_weights: bool = True) -> ContentLoss | None:
    """The content loss of a ``loss`` config group, or None when both of its weights are 0.

    Keys read (all but ``weights`` optional): ``weights.content_vgg19``, ``weights.content_vggface``,
    ``vgg19_path``, ``vggface_path``, ``vgg19_input_norm``, ``vgg_pool``, ``vgg19_layers`` (default
    [1, 6, 11, 20, 29]), ``vggface_layers`` (default [1, 6, 11, 18, 25]), ``weights_dir``. A config without
    ``vgg19_input_norm`` / ``vgg_pool`` (one saved in a checkpoint before these keys existed) gets what such
    runs were trained with, "imagenet" and "max"; ``loss=paper`` sets "caffe" and "avg".

    Args:
        unit_weights: build the terms that are on with weight 1 (the training modules multiply each term by
            its config weight themselves, so that every term is weighed in one place); False: with the
            config weights.
    """
    weights = loss_cfg["weights"]
    w19 = float(weights.get("content_vgg19", 0) or 0)
    wf = float(weights.get("content_vggface", 0) or 0)
    if not (w19 or wf):
        return None
    if unit_weights:
        w19, wf = float(w19 > 0), float(wf > 0)

    def layers(key: str, default: Sequence[int]) -> tuple[int, ...]:
        value = loss_cfg.get(key)
        return tuple(int(i) for i in (default if value is None else value))

    return ContentLoss(
        weight_vgg19=w19,
        weight_vggface=wf,
        vgg19_weights=loss_cfg.get("vgg19_path"),
        vggface_weights=loss_cfg.get("vggface_path"),
        weights_dir=loss_cfg.get("weights_dir"),
        vgg19_layers=layers("vgg19_layers", VGG19_LAYERS),
        vggface_layers=layers("vggface_layers", VGGFACE_LAYERS),
        vgg19_input_norm=str(loss_cfg.get("vgg19_input_norm") or LEGACY_VGG19_INPUT_NORM),
        pool=str(loss_cfg.get("vgg_pool") or LEGACY_POOL),  # type: ignore[arg-type]
        vggface_zoom=loss_cfg.get("vggface_zoom"),  # absent (a checkpoint before the key): the whole frame
    )
