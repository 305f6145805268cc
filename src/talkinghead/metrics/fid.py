"""FID (Heusel et al. 2017) with the reference InceptionV3 (pytorch-fid's port of the TF 2015-12-05 graph).

torchmetrics' own FID network needs torch-fidelity (and torchvision); here the feature network is the
project's ``FIDInceptionV3`` loaded from ``pt_inception-2015-12-05-6726825d.pth``. Without that file FID is
reported as unavailable, with the reason; it is never computed on random weights.
"""
from __future__ import annotations

import os

import torch
from torch import Tensor
from torchmetrics.image.fid import FrechetInceptionDistance

from talkinghead.backbones.inception import FIDInceptionV3
from talkinghead.backbones.weights import MissingWeightsError, get_spec, resolve
from talkinghead.backbones.weights import weights_dir as default_dir

FID_WEIGHTS = "inception_fid"
FID_CONFIG_KEY = "metrics.fid_weights"


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """``|mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2))``; ``(D,)`` means, ``(D, D)`` covs.

    ``tr((sigma1 sigma2)^(1/2))`` is the sum of the square roots of the eigenvalues of the symmetric PSD
    matrix ``s sigma2 s`` with ``s = sigma1^(1/2)``; with ``sigma1 = V diag(w) V^T`` those are the eigenvalues
    of the ``r x r`` matrix ``diag(w_r)^(1/2) V_r^T sigma2 V_r diag(w_r)^(1/2)`` (``r`` non-zero ``w``).
    So one symmetric eigendecomposition of size D plus one of size ``r`` replace the non-symmetric
    ``eigvals(sigma1 @ sigma2)`` torchmetrics uses: exact, real-valued, and several times faster.
    """
    mu1, mu2, sigma1, sigma2 = (t.double() for t in (mu1, mu2, sigma1, sigma2))
    sigma1 = (sigma1 + sigma1.T) / 2
    w, v = torch.linalg.eigh(sigma1)
    keep = w > w.max().clamp(min=0) * 1e-12
    half = v[:, keep] * w[keep].sqrt()  # (D, r): half @ half.T = sigma1 on its range
    inner = half.T @ sigma2 @ half
    ev = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp(min=0)
    return (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * ev.sqrt().sum()


def frechet_distance_from_features(real: Tensor, fake: Tensor) -> Tensor:
    """FID of two feature sets ``(N1, D)``, ``(N2, D)`` without any ``D x D`` decomposition.

    With centred features ``A1``, ``A2``: ``sigma_i = A_i^T A_i / (N_i - 1)``, and the non-zero eigenvalues
    of ``sigma1 sigma2`` are the squared singular values of ``A1 A2^T / sqrt((N1 - 1)(N2 - 1))``
    (``N1 x N2``), so ``tr((sigma1 sigma2)^(1/2))`` is that matrix's nuclear norm. Cheap whenever ``N < D``
    (a held-out set of a few hundred frames against D = 2048).
    """
    real, fake = real.double(), fake.double()
    n1, n2 = real.shape[0], fake.shape[0]
    mu1, mu2 = real.mean(0), fake.mean(0)
    a1, a2 = real - mu1, fake - mu2
    tr1 = a1.square().sum() / (n1 - 1)
    tr2 = a2.square().sum() / (n2 - 1)
    cross = torch.linalg.svdvals(a1 @ a2.T).sum() / ((n1 - 1) * (n2 - 1)) ** 0.5
    return (mu1 - mu2).square().sum() + tr1 + tr2 - 2 * cross


class FID(FrechetInceptionDistance):
    """torchmetrics' ``FrechetInceptionDistance`` on ``FIDInceptionV3`` features, fed the project's images.

    ``update(imgs, real)`` takes float ``(B, 3, H, W)`` in [-1, 1] (mapped to [0, 1]; the network resizes to
    299x299 itself) or uint8 in [0, 255]. ``compute()`` needs at least 2 real and 2 generated images.

    Besides torchmetrics' running sums (kept as they are, DDP-summed), the features themselves are kept while
    a side has at most ``exact_small_n`` images: then ``compute()`` uses ``frechet_distance_from_features``
    (an ``N x N`` SVD) instead of decomposing the 2048 x 2048 covariance, which takes seconds on a CPU.
    Beyond that it uses ``frechet_distance`` on the sums. Both are exact; they agree to rounding.

    Args:
        exact_small_n: the largest per-side image count for which features are kept (0: never).
    """

    def __init__(self, *args: object, exact_small_n: int = 1024, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.exact_small_n = int(exact_small_n)
        self.add_state("real_features", [], dist_reduce_fx="cat")
        self.add_state("fake_features", [], dist_reduce_fx="cat")

    def update(self, imgs: Tensor, real: bool) -> None:
        if imgs.is_floating_point():
            imgs = ((imgs.float() + 1.0) / 2.0).clamp(0.0, 1.0)
        elif imgs.dtype != torch.uint8:
            raise TypeError(f"FID takes float images in [-1, 1] or uint8, got dtype {imgs.dtype}")
        features = self.inception(imgs)
        self.orig_dtype = features.dtype
        features = features.double().reshape(imgs.shape[0], -1)
        prefix = "real" if real else "fake"
        setattr(self, f"{prefix}_features_sum", getattr(self, f"{prefix}_features_sum") + features.sum(0))
        setattr(self, f"{prefix}_features_cov_sum",
                getattr(self, f"{prefix}_features_cov_sum") + features.T @ features)
        count = getattr(self, f"{prefix}_features_num_samples") + imgs.shape[0]
        setattr(self, f"{prefix}_features_num_samples", count)
        kept: list[Tensor] = getattr(self, f"{prefix}_features")
        if int(count) <= self.exact_small_n:
            kept.append(features.float())
        else:
            kept.clear()  # too many for the N x N route: compute() falls back to the sums

    def _kept(self, prefix: str, n: int) -> Tensor | None:
        kept = getattr(self, f"{prefix}_features")
        if isinstance(kept, list):
            kept = torch.cat(kept) if kept else None
        return kept if kept is not None and kept.shape[0] == n else None

    def compute(self) -> Tensor:
        n_real, n_fake = int(self.real_features_num_samples), int(self.fake_features_num_samples)
        if n_real < 2 or n_fake < 2:
            raise RuntimeError(f"FID needs at least 2 real and 2 generated images, got {n_real} and {n_fake}")
        real, fake = self._kept("real", n_real), self._kept("fake", n_fake)
        if real is not None and fake is not None:
            return frechet_distance_from_features(real, fake).float()
        mu_real = self.real_features_sum / n_real
        mu_fake = self.fake_features_sum / n_fake
        cov_real = (self.real_features_cov_sum - n_real * torch.outer(mu_real, mu_real)) / (n_real - 1)
        cov_fake = (self.fake_features_cov_sum - n_fake * torch.outer(mu_fake, mu_fake)) / (n_fake - 1)
        return frechet_distance(mu_real, cov_real, mu_fake, cov_fake).float()

    def reset(self) -> None:
        kept = None if self.reset_real_features else list(self.real_features)
        super().reset()  # keeps the real sums when reset_real_features is False
        if kept is not None:
            self.real_features = kept


def build_fid(
    weights_path: str | os.PathLike[str] | None,
    weights_dir: str | os.PathLike[str] | None = None,
    *,
    resize_input: bool = True,
    **kwargs: object,
) -> FID:
    """FID on the published InceptionV3 weights.

    Args:
        weights_path: ``pt_inception-2015-12-05-6726825d.pth`` (None: ``<weights_dir>/<that name>``).
        weights_dir: see ``talkinghead.backbones.weights.weights_dir``.
        resize_input: resize to 299x299 first (reference FID numbers assume it; False only for tests on
            images of at least 75x75).
        **kwargs: ``FrechetInceptionDistance`` / ``Metric`` options (``reset_real_features``,
            ``sync_on_compute``, ...).

    Raises:
        MissingWeightsError: the file is absent (message names ``make weights``).
        WeightLayoutError: the file is not the published layout.
    """
    path = resolve(FID_WEIGHTS, weights_path, directory=weights_dir)
    net = FIDInceptionV3.from_file(path, resize_input=resize_input)
    kwargs.setdefault("normalize", True)  # a custom network gets the [0, 1] floats as they are
    return FID(feature=net, **kwargs)  # type: ignore[arg-type]


def try_build_fid(
    weights_path: str | os.PathLike[str] | None,
    weights_dir: str | os.PathLike[str] | None = None,
    *,
    config_key: str = FID_CONFIG_KEY,
    **kwargs: object,
) -> tuple[FID | None, str | None]:
    """``(metric, None)``, or ``(None, reason)`` when the weight file is missing.

    The reason reads like ``"weights/pt_inception-2015-12-05-6726825d.pth missing: run `make weights` (or set
    metrics.fid_weights to the file)"``, naming ``config_key`` (``callbacks.metrics.fid_weights`` in
    meta-learning). A file that IS there but has the wrong layout still raises.
    """
    try:
        return build_fid(weights_path, weights_dir, **kwargs), None
    except MissingWeightsError:
        spec = get_spec(FID_WEIGHTS)
        where = weights_path if weights_path not in (None, "") else default_dir(weights_dir) / spec.filename
        return None, (f"{where} missing: run `make weights` (or set {config_key} to the file); "
                      f"FID is never computed on random weights")
