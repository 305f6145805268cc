"""Meta-learning's progress bar: iterations out of the run's total, not Lightning's epochs.

A meta-learning run is sized in iterations (``max_steps``) with ``max_epochs=-1``, and an epoch is one pass over
the training videos (a single batch on a small dataset), so Lightning's bar read "Epoch 49/-2". This bar's label
is ``iteration 340/600``: batches trained on (``logging_step``) out of ``max_steps`` over the optimiser steps that
make one iteration (D's and G's). The bar spans the whole run (its ETA is the run's), not one pass over the videos.
"""
from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar

from talkinghead.callbacks import logging_step


class IterationProgressBar(RichProgressBar):
    """Lightning's rich bar, labelled with the iteration and the run's total iterations."""

    def __init__(self, steps_per_iteration: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if steps_per_iteration < 1:
            raise ValueError(f"steps_per_iteration must be at least 1, got {steps_per_iteration}")
        self.steps_per_iteration = int(steps_per_iteration)

    @property
    def total_train_batches(self) -> int | float:
        """The whole run's iterations (the bar spans the run, not one pass over the videos)."""
        max_steps = int(self.trainer.max_steps)
        return max_steps // self.steps_per_iteration if max_steps > 0 else super().total_train_batches

    def label(self, done: int | None = None) -> str:
        """``iteration i/total`` (``i`` iterations done; by default as Lightning counts them), or ``iteration i``
        for an unbounded run."""
        done = logging_step(self.trainer) if done is None else done
        return f"iteration {done}/{self.total_train_batches}" if self.trainer.max_steps > 0 else f"iteration {done}"

    def _get_train_description(self, current_epoch: int) -> str:
        return self.label()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.train_progress_bar_id is None or self._leave or self.progress is None:
            super().on_train_epoch_start(trainer, pl_module)  # makes the bar (0 of the total): put back what is done
            self._update(self.train_progress_bar_id, logging_step(trainer))
        # a later epoch goes on on the same bar: Lightning's reset would restart its clock, speed and ETA

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kwargs: Any) -> None:
        if self.is_disabled:
            return
        if self.train_progress_bar_id is None:  # a run resumed mid-epoch
            self._initialize_train_progress_bar_id()
        done = logging_step(trainer) + 1  # Lightning counts this batch only after its on_train_batch_end hooks
        if self.progress is not None and self.train_progress_bar_id is not None:  # one update, one refresh
            self.progress.update(self.train_progress_bar_id, completed=done, description=self.label(done))
        self._update_metrics(trainer, pl_module)
        self.refresh()
