"""Tell the user, when a run is stopped with Ctrl-C, that the same command resumes it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl


class ResumeHint(pl.callbacks.Callback):
    """On KeyboardInterrupt (Lightning then exits the process), print where the last checkpoint is."""

    def __init__(self, checkpoint: str) -> None:
        self.checkpoint = checkpoint

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            it = getattr(pl_module, "iteration", "?")
            if Path(self.checkpoint).exists():
                hint = f"run the same command again to resume from {self.checkpoint}"
            else:
                hint = "no checkpoint was written yet (every callbacks.ckpt_every_n_iterations); a rerun starts afresh"
            print(f"\ninterrupted at iteration {it}: {hint}", file=sys.stderr)
