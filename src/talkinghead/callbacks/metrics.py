"""SSIM / FID / CSIM on held-out episodes every N generator iterations and at the end of training.

Rank-0 only: rank 0 renders the first ``max_batches`` batches of ``trainer.datamodule.val_dataloader()`` and
computes the metrics locally (torchmetrics' cross-process sync is switched off, so it never waits for ranks
that do not evaluate); the other ranks simply go on and meet rank 0 again at the next gradient all-reduce.
Results go to every logger (W&B, CSV) as ``metrics/ssim``, ``metrics/fid``, ``metrics/csim`` at the current
``global_step``; unavailable metrics (FID without its weight file) are announced once, with the reason, and
recorded with the CSIM encoder's name among the loggers' hyperparameters.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl

from talkinghead.callbacks import logging_step
from talkinghead.callbacks.weight_average import averaged_weights
import torch
from pytorch_lightning.utilities import rank_zero_info

from talkinghead.metrics.suite import MetricsSuite
from talkinghead.modules.meta_learning import split_episode


class MetricsCallback(pl.Callback):
    """Evaluate a ``MetaLearningModule`` (``reconstruct(batch)``, ``iteration``) on held-out episodes.

    Args:
        every_n_iterations: evaluate when ``pl_module.iteration`` (generator updates) is a multiple of this;
            0 or less: only at the end of training.
        max_batches: how many validation batches to use (the first ones, in loader order).
        config: the ``metrics`` config (see ``talkinghead.metrics.suite``).
        at_end: also evaluate in ``on_train_end`` (unless the last iteration was just evaluated).
        suite: a ready ``MetricsSuite`` (built with ``sync_on_compute=False``) instead of one built from
            ``config`` at fit start.
        config_key: where ``config`` sits in the stage's config, for the keys messages name.

    Attributes:
        last_results: ``{"ssim": .., "fid": .., "csim": ..}`` of the latest evaluation (None: unavailable).
        history: ``[(iteration, results), ...]``.
    """

    def __init__(self, every_n_iterations: int = 1000, max_batches: int = 8,
                 config: Mapping[str, Any] | None = None, at_end: bool = True,
                 suite: MetricsSuite | None = None, config_key: str = "callbacks.metrics") -> None:
        if max_batches < 1:
            raise ValueError(f"max_batches must be >= 1, got {max_batches}")
        self.every = int(every_n_iterations)
        self.max_batches = int(max_batches)
        self.config = dict(config or {})
        self.at_end = at_end
        self.config_key = config_key
        self.suite: MetricsSuite | None = suite
        self.last_evaluated = -1
        self.last_results: dict[str, float | None] = {}
        self.history: list[tuple[int, dict[str, float | None]]] = []
        self._announced = False

    # ------------------------------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if trainer.datamodule is None:
            raise RuntimeError(
                "MetricsCallback needs trainer.fit(..., datamodule=...) with a val_dataloader()")
        if self.suite is None:
            self.suite = MetricsSuite(self.config, device=pl_module.device, sync_on_compute=False,
                                      config_key=self.config_key)
        self.announce(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        it = int(pl_module.iteration)
        if self.every > 0 and it > 0 and it % self.every == 0 and it != self.last_evaluated:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_end and int(pl_module.iteration) != self.last_evaluated:
            self.evaluate(trainer, pl_module)

    # ------------------------------------------------------------------------------------------- work
    def announce(self, trainer: pl.Trainer) -> None:
        """Say once which CSIM encoder is used and which metrics are unavailable, and why."""
        if self._announced or self.suite is None:
            return
        self._announced = True
        params: dict[str, Any] = {"metrics/csim_encoder": self.suite.csim_encoder or "off"}
        for name, reason in self.suite.unavailable.items():
            rank_zero_info(f"metrics: {name.upper()} unavailable ({reason})")
            params[f"metrics/unavailable/{name}"] = reason
        if self.suite.csim_encoder:
            rank_zero_info(f"metrics: CSIM uses the {self.suite.csim_encoder} face encoder")
        for logger in trainer.loggers:
            logger.log_hyperparams(params)

    @torch.no_grad()
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float | None]:
        """Render up to ``max_batches`` held-out batches, compute and log the metrics (rank 0 only)."""
        if not trainer.is_global_zero:
            return {}
        if self.suite is None:
            self.on_fit_start(trainer, pl_module)
        suite = self.suite
        assert suite is not None
        it = int(pl_module.iteration)
        self.last_evaluated = it
        loader = trainer.datamodule.val_dataloader()
        if not loader:  # e.g. VoxCeleb shards made from dev/ only: no held-out person
            if not getattr(self, "_said_empty", False):
                self._said_empty = True
                rank_zero_info("metrics: no held-out videos (val_dataloader is empty); skipped")
            return {}
        was_training = pl_module.training
        pl_module.eval()
        suite.reset()
        try:
            with averaged_weights(trainer, pl_module):  # the running average of E and G, when kept (FSTH renders it)
                for i, batch in enumerate(loader):
                    if i >= self.max_batches:
                        break
                    batch = {k: v.to(pl_module.device) if isinstance(v, torch.Tensor) else v
                             for k, v in batch.items()}
                    x_hat = pl_module.reconstruct(batch)
                    suite.update(x_hat.float(), split_episode(batch)[2].float())
            results = suite.compute()
        finally:
            pl_module.train(was_training)
        self.last_results = results
        self.history.append((it, results))
        values = {f"metrics/{k}": v for k, v in results.items() if v is not None}
        if values:
            for logger in trainer.loggers:
                logger.log_metrics(values, step=logging_step(trainer))
            for k, v in values.items():
                trainer.callback_metrics[k] = torch.tensor(v)
        shown = ", ".join(f"{k.upper()} {'n/a' if v is None else f'{v:.4f}'}" for k, v in results.items())
        encoder = f" (CSIM encoder: {suite.csim_encoder})" if suite.csim_encoder else ""
        rank_zero_info(f"metrics @ iteration {it}: {shown}{encoder}")
        for name, reason in suite.skipped.items():
            rank_zero_info(f"metrics: {name.upper()} skipped at iteration {it}: {reason}")
        return results
