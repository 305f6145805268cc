"""Lightning callbacks: sample grids and metrics during training."""
from __future__ import annotations

import pytorch_lightning as pl


def logging_step(trainer: pl.Trainer) -> int:
    """The step Lightning's ``self.log`` uses (batches trained on): images and metrics logged by callbacks
    go on the same x-axis as the losses (``global_step`` counts every optimiser's steps)."""
    loop = trainer.fit_loop.epoch_loop
    return int(getattr(loop, "_batches_that_stepped", trainer.global_step))
