"""The inference path: landmark images -> frames with a fixed ψ (no embedder, no projection per frame).

Reenactment, previews and evaluation render through :class:`FrameRenderer`.  An avatar's renderer, whatever
runs it, plays one role, :class:`AvatarFrames`: torch's ``talkinghead.inference.avatar.AvatarRenderer`` (over a
FrameRenderer) or onnxruntime's ``talkinghead.inference.export.OnnxAvatarRenderer``, chosen by
``talkinghead.inference.export.avatar_renderer`` (``backend``: torch, onnx or auto).  It works on the generator's
``inference_copy()`` (the model interface, ``talkinghead.nets.interface``: for the paper's generator the
spectral-norm divisions baked and the up-convolutions run at the low resolution), laid out and run as
``talkinghead.speed.Speed`` says (channels-last, in bf16 where native, optionally compiled).
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from talkinghead.speed import Speed, to_memory_format


@runtime_checkable
class AvatarFrames(Protocol):
    """The renderer role of one avatar: ``render(landmark_images (N, 3, S, S) in [-1, 1]) -> (N, 3, S, S) fp32 on
    the CPU`` in batches; ``avatar`` is what it renders, ``backend`` what runs it (``torch`` | ``onnxruntime``),
    ``device`` where."""

    avatar: Any
    backend: str
    device: Any

    def render(self, landmark_images: torch.Tensor, batch_size: int = 16) -> torch.Tensor: ...


class FrameRenderer:
    """``render(landmark_images (N, 3, S, S) in [-1, 1]) -> (N, 3, S, S) fp32 on the CPU``, in batches.

    ``generator``: a generator of the model interface (``PersonGenerator``; left untouched: the renderer works on
    its ``inference_copy()``); ``psi``: (n,) the avatar's parameters ψ', moved to ``device`` once.
    """

    def __init__(
        self, generator: nn.Module, psi: torch.Tensor, device: torch.device | str = "cpu", speed: Speed | None = None
    ) -> None:
        self.device = torch.device(device)
        self.speed = (speed or Speed.plain()).resolve(self.device, long_run=False)
        self.speed.apply_process()
        # mixed precision at inference = the whole baked copy in bf16 (or fp16): autocast would re-cast every
        # weight on every forward, as weights without gradients are not cached; the error is the same
        self.dtype = self.speed.autocast_dtype or torch.float32
        net = generator.inference_copy().to(self.device, self.dtype).eval().requires_grad_(False)
        self.speed.prepare(net)
        self.generator = net
        self.psi = psi.detach().reshape(1, -1).to(self.device, self.dtype)

    @torch.no_grad()
    def render(self, landmark_images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        out = []
        for y in landmark_images.split(batch_size):
            y = to_memory_format(y.to(self.device, self.dtype, non_blocking=True), self.speed.memory_format)
            out.append(self.generator(y, psi=self.psi).float().cpu())
        return torch.cat(out)


def pick_device(device: str) -> torch.device:
    """``auto`` -> cuda when present, else cpu; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
