"""A second, toy model that meets the model interface (talkinghead.nets.interface) and nothing more: proof that a
model is its own file and its config (tests/configs/model/toy.yaml), run end to end by tests/test_model_interface.py.

E: two strided convolutions over (x, y), mean-pooled.  G: convolutions whose features are scaled and shifted by
ψ = P ê (one FiLM layer, ψ of length 2C).  The discriminator is the project's projection discriminator.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class ToyEmbedder(nn.Module):
    def __init__(self, image_size: int = 32, emb_dim: int = 32, channels: int = 16) -> None:
        super().__init__()
        self.image_size, self.emb_dim = image_size, emb_dim
        self.net = nn.Sequential(nn.Conv2d(6, channels, 4, 2, 1), nn.ReLU(), nn.Conv2d(channels, emb_dim, 4, 2, 1))

    def embed_frames(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, k = x.shape[:2]
        h = self.net(torch.cat([x, y], 2).flatten(0, 1))  # (B K, emb, S/4, S/4)
        return F.relu(h.mean((2, 3))).view(b, k, -1)

    def embed(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.embed_frames(x, y).mean(1)


class ToyGenerator(nn.Module):
    def __init__(self, image_size: int = 32, emb_dim: int = 32, channels: int = 16) -> None:
        super().__init__()
        self.image_size, self.emb_dim, self.channels = image_size, emb_dim, channels
        self.inp = nn.Conv2d(3, channels, 3, padding=1)
        self.mid = nn.Conv2d(channels, channels, 3, padding=1)
        self.out = nn.Conv2d(channels, 3, 3, padding=1)
        self.P = nn.Linear(emb_dim, 2 * channels, bias=False)

    def project(self, e: torch.Tensor) -> torch.Tensor:
        return self.P(e)

    def forward(self, y: torch.Tensor, e: torch.Tensor | None = None, psi: torch.Tensor | None = None) -> torch.Tensor:
        psi = self.project(e) if psi is None else psi.reshape(-1, 2 * self.channels)
        gamma, beta = psi.expand(y.shape[0], -1)[:, :, None, None].chunk(2, dim=1)
        h = F.relu(self.inp(y)) * (1 + gamma) + beta
        return torch.tanh(self.out(F.relu(self.mid(h))))

    def inference_copy(self) -> nn.Module:
        return copy.deepcopy(self).eval().requires_grad_(False)

    def folded(self, psi: torch.Tensor) -> nn.Module:
        return ToyFolded(self.inference_copy(), psi)


class ToyFolded(nn.Module):
    def __init__(self, generator: ToyGenerator, psi: torch.Tensor) -> None:
        super().__init__()
        self.generator, self.image_size = generator, generator.image_size
        self.register_buffer("psi", psi.detach().reshape(1, -1).clone())

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.generator(y, psi=self.psi)
