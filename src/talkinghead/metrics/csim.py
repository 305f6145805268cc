"""CSIM: cosine similarity of face-recognition embeddings of generated and real frames (paper Sec. 4, "CSIM").

Higher is better; 1 means the generated frame carries exactly the identity features of the real one. Which
encoder produced the embeddings changes the scale of the numbers, so results must say it: ``encoder_name``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

from .face_encoders import DlibFaceEncoder, FaceEncoder, images_to_uint8


class CSIM(Metric):
    """Mean cosine similarity between the identity embeddings of ``fake`` and ``real`` frames, pair by pair.

    Args:
        encoder: a ``DlibFaceEncoder`` (default, built when None) or ``ArcFaceEncoder``.
        **kwargs: torchmetrics ``Metric`` options (e.g. ``sync_on_compute=False`` when only one rank updates).

    ``update(fake, real)``: float ``(B, 3, H, W)`` images in [-1, 1]; the encoders run on the CPU (dlib).
    State: the sum of the per-pair similarities and the pair count, both summed across DDP ranks.
    """

    higher_is_better = True
    full_state_update = False
    sim_sum: Tensor
    count: Tensor

    def __init__(self, encoder: FaceEncoder | None = None, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder if encoder is not None else DlibFaceEncoder()
        self.add_state("sim_sum", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @property
    def encoder_name(self) -> str:
        """``"dlib-resnet"`` or ``"arcface-ir-se50"``."""
        return self.encoder.name

    @property
    def fallbacks(self) -> tuple[int, int]:
        """``(frames whose face box fell back to the crop centre, frames encoded)`` since construction."""
        return self.encoder.locator.fallbacks, self.encoder.locator.seen

    def pair_similarities(self, fake: Tensor, real: Tensor) -> Tensor:
        """Cosine similarity of each pair, float64 ``(B,)``."""
        if fake.shape != real.shape:
            raise ValueError(f"CSIM needs fake and real of the same shape, got {tuple(fake.shape)} "
                             f"and {tuple(real.shape)}")
        e_fake = self.encoder.encode(images_to_uint8(fake)).astype(np.float64)
        e_real = self.encoder.encode(images_to_uint8(real)).astype(np.float64)
        num = (e_fake * e_real).sum(1)
        den = np.linalg.norm(e_fake, axis=1) * np.linalg.norm(e_real, axis=1)
        return torch.from_numpy(num / np.maximum(den, 1e-12))

    def update(self, fake: Tensor, real: Tensor) -> None:
        sims = self.pair_similarities(fake, real)
        self.sim_sum += sims.sum().to(self.sim_sum.device)
        self.count += sims.numel()

    def compute(self) -> Tensor:
        if int(self.count) == 0:
            raise RuntimeError("CSIM.compute() before any update(fake, real)")
        return (self.sim_sum / self.count).float()
