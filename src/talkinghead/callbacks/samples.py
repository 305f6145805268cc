"""Sample grids on a fixed validation batch: PNG files in the run folder and images on the W&B dashboard."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from talkinghead.callbacks import logging_step
from talkinghead.callbacks.weight_average import averaged_weights
from talkinghead.modules.meta_learning import split_episode
from talkinghead.visualize import batch_to_float, make_grid, sample_rows, save_png


def fixed_batch(loader: Any, n: int) -> dict[str, Any] | None:
    """``n`` samples spread evenly over a map-style dataset (many people in one grid), else the first
    ``n`` of the loader's first batch; kept on the CPU."""
    if not loader:  # an empty list: no held-out videos
        return None
    ds = getattr(loader, "dataset", None)
    if (ds is not None and not isinstance(ds, torch.utils.data.IterableDataset) and hasattr(ds, "__len__")
            and len(ds) > 0):
        picks = sorted({int(i) for i in torch.linspace(0, len(ds) - 1, n)})
        return batch_to_float(torch.utils.data.default_collate([ds[i] for i in picks]))
    batch = next(iter(loader), None)
    if batch is None:
        return None
    return batch_to_float({k: (v[:n] if isinstance(v, (torch.Tensor, list)) else v) for k, v in batch.items()})


class SampleGridCallback(pl.Callback):
    """Every ``every_n_iterations`` generator updates (and at the end), render a fixed held-out batch.

    Grid rows: K source frames (up to 4) | target landmark image | generated | real; rendered with the running
    average of E and G when the run keeps one (``callbacks.weight_average``), as fine-tuning and driving are.  Written to
    ``<out_dir>/iter_XXXXXX.png`` and ``latest.png``, and logged as ``samples`` to every W&B logger.
    """

    def __init__(self, out_dir: str | Path, every_n_iterations: int = 100, num_samples: int = 4) -> None:
        self.out_dir = Path(out_dir)
        self.every = max(int(every_n_iterations), 1)
        self.num_samples = num_samples
        self.batch: Mapping[str, Any] | None = None
        self.last_logged = -1
        self.last_path: Path | None = None
        self.caption = "held-out frames"
        self.weights = "trained E, G"

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero and trainer.datamodule is not None:
            self.batch = fixed_batch(trainer.datamodule.val_dataloader(), self.num_samples)
            if self.batch is None:  # no held-out videos (e.g. shards of VoxCeleb's dev/ only): show training videos
                self.caption = "training videos (no held-out videos in this data)"
                self.batch = fixed_batch(trainer.datamodule.train_dataloader(), self.num_samples)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        it = pl_module.iteration
        if it % self.every == 0 and it != self.last_logged:
            self.log_grid(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.iteration != self.last_logged:
            self.log_grid(trainer, pl_module)

    @torch.no_grad()
    def log_grid(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Path | None:
        if not trainer.is_global_zero or self.batch is None:
            return None
        it = pl_module.iteration
        self.last_logged = it
        batch = {k: v.to(pl_module.device) if isinstance(v, torch.Tensor) else v for k, v in self.batch.items()}
        was_training = pl_module.training
        pl_module.eval()
        with averaged_weights(trainer, pl_module) as averaged:  # the weights fine-tuning and driving use
            x_hat = pl_module.reconstruct(batch)
        pl_module.train(was_training)
        self.weights = "averaged E, G" if averaged else "trained E, G"
        x_src, _, x, y = split_episode(batch)
        grid = make_grid(sample_rows(x_src, y, x_hat, x))
        path = save_png(grid, self.out_dir / f"iter_{it:06d}.png")
        save_png(grid, self.out_dir / "latest.png")
        self.last_path = path
        for logger in trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                logger.log_image(
                    key="samples", images=[grid], step=logging_step(trainer),
                    caption=[f"iteration {it} ({self.caption}, {self.weights}): K sources | target landmarks | generated | real"],
                )
        return path
