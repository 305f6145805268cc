"""Spectral normalisation (Miyato et al. 2018) whose power iteration runs once per optimiser step.

``torch.nn.utils.parametrizations.spectral_norm`` runs a power iteration on every forward in training mode:
the discriminator, called three times per meta-learning iteration (two D updates and G's update), would get
three per iteration, each one a serial chain of small matrix-vector products.  Here the forward only divides
by sigma = u^T W v with the stored (u, v), and the training loop calls :func:`power_iteration` once per
optimiser step for the network about to be updated.  The parametrisation keeps torch's state-dict layout
(``parametrizations.weight.original`` and ``parametrizations.weight.0._u`` / ``._v``), so checkpoints written
with torch's spectral norm load unchanged.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize


class SpectralNorm(nn.Module):
    """Parametrisation ``W -> W / sigma(W)``, sigma from the stored singular vectors (no iteration here).

    ``weight`` (out, ...) is viewed as the matrix (out, prod(...)); u (out,) and v (prod(...),) are buffers.
    sigma is computed in fp32 even under autocast (a bf16 sigma would rescale the whole layer by its rounding).
    """

    def __init__(self, weight: torch.Tensor, init_iterations: int = 15, eps: float = 1e-12) -> None:
        super().__init__()
        if weight.dim() < 2:
            raise ValueError(f"spectral norm needs a weight of 2 or more dimensions, got {tuple(weight.shape)}")
        self.eps = eps
        mat = weight.detach().flatten(1)
        self.register_buffer("_u", F.normalize(mat.new_empty(mat.shape[0]).normal_(0, 1), dim=0, eps=eps))
        self.register_buffer("_v", F.normalize(mat.new_empty(mat.shape[1]).normal_(0, 1), dim=0, eps=eps))
        self.power_iteration(weight, init_iterations)

    @torch.no_grad()
    def power_iteration(self, weight: torch.Tensor, iterations: int = 1) -> None:
        """Refine (u, v) towards W's top singular vectors in place (torch's order: u first, then v)."""
        with torch.autocast(weight.device.type, enabled=False):  # the training step runs under autocast
            mat = weight.detach().flatten(1).float()
            for _ in range(iterations):
                self._u.copy_(F.normalize(torch.mv(mat, self._v), dim=0, eps=self.eps))
                self._v.copy_(F.normalize(torch.mv(mat.t(), self._u), dim=0, eps=self.eps))

    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """sigma = u^T W v, fp32, differentiable in W (for layers that read a few rows of W / sigma only)."""
        with torch.autocast(weight.device.type, enabled=False):
            return torch.dot(self._u, torch.mv(weight.float().flatten(1), self._v))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            return (weight.float() / self.sigma(weight)).to(weight.dtype)


def spectral_norm(module: nn.Module, name: str = "weight") -> nn.Module:
    """Register :class:`SpectralNorm` on ``module.<name>`` (in place); returns ``module``."""
    parametrize.register_parametrization(module, name, SpectralNorm(getattr(module, name)))
    return module


def spectral_norms(module: nn.Module) -> Iterable[tuple[nn.Module, SpectralNorm]]:
    """(layer, its SpectralNorm) for every spectrally normalised weight under ``module``."""
    for layer in module.modules():
        params = getattr(layer, "parametrizations", None)
        if params is not None and "weight" in params:
            for p in params["weight"]:
                if isinstance(p, SpectralNorm):
                    yield layer, p


@torch.no_grad()
def power_iteration(*modules: nn.Module) -> int:
    """One power iteration for every spectrally normalised weight under ``modules``; returns how many.

    Call it once per optimiser step, before the forward of the network that step updates.
    """
    n = 0
    for module in modules:
        for layer, sn in spectral_norms(module):
            sn.power_iteration(layer.parametrizations.weight.original)
            n += 1
    return n


def is_spectral_normed(module: nn.Module) -> bool:
    """True when ``module.weight`` is produced by a :class:`SpectralNorm` parametrisation."""
    params = getattr(module, "parametrizations", None)
    return params is not None and "weight" in params and any(isinstance(p, SpectralNorm) for p in params["weight"])


def bake(module: nn.Module) -> nn.Module:
    """Replace every spectral-norm parametrisation under ``module`` by its current value W / sigma (in place).

    For inference: the weights stop being recomputed on every forward.  Unlike
    ``parametrize.remove_parametrizations``, this never edits the parametrised class object, which a deep copy
    shares with its original: bake a copy and the original keeps working.  Returns ``module``.
    """
    for layer, _ in list(spectral_norms(module)):
        if len(layer.parametrizations) != 1:
            raise ValueError(f"cannot bake {type(layer).__name__}: it has parametrised tensors besides its weight")
        with torch.no_grad():
            weight = layer.weight.detach().clone()
        del layer.parametrizations
        layer.__class__ = type(layer).__bases__[0]  # the un-parametrised class (instance only)
        layer.weight = nn.Parameter(weight, requires_grad=False)
    return module
