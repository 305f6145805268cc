"""Meta-learning's progress bar counts iterations out of the run's total (Lightning's read "Epoch 49/-2")."""
from __future__ import annotations

from typing import Any

import pytest
import pytorch_lightning as pl

pytest.importorskip("rich")


def test_the_bar_reads_iterations_of_the_total(tmp_path: Any) -> None:
    from finetune_helpers import QUIET, TINY_MODEL, TINY_SYNTHETIC_DATA

    from talkinghead.callbacks.progress import IterationProgressBar
    from talkinghead.config import compose
    from talkinghead.training.train import build_meta_learning

    labels: list[str] = []
    done: list[tuple[float, float]] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            bar = trainer.progress_bar_callback
            task = bar.progress.tasks[bar.train_progress_bar_id]
            labels.append(str(task.description))
            done.append((task.completed, task.total))

    cfg = compose("meta_learn", [*QUIET, *TINY_MODEL, *TINY_SYNTHETIC_DATA, "speed=plain", "trainer.precision=32-true",
                                 "K=2", "iterations=3", f"run_dir={tmp_path}", "trainer.enable_progress_bar=true"])
    run = build_meta_learning(cfg, extra_callbacks=[Record()])
    run.trainer.num_sanity_val_steps = 0
    bar = run.trainer.progress_bar_callback
    assert isinstance(bar, IterationProgressBar) and bar.steps_per_iteration == 1 + run.module.d_steps_per_g
    run.fit()
    # callbacks run in order: the bar (appended last) labels after Record, so Record sees the previous label
    assert all("Epoch" not in x for x in labels), labels
    assert bar.label() == "iteration 3/3", bar.label()
    assert labels[-1] == "iteration 2/3", labels
    # one bar over the whole run, across the tiny data's epochs
    assert run.trainer.current_epoch >= 1 and done == [(0, 3), (1, 3), (2, 3)], done


def test_no_bar_when_progress_is_off(tmp_path: Any) -> None:
    from finetune_helpers import QUIET, TINY_MODEL, TINY_SYNTHETIC_DATA

    from talkinghead.callbacks.progress import IterationProgressBar
    from talkinghead.config import compose
    from talkinghead.training.train import build_meta_learning

    cfg = compose("meta_learn", [*QUIET, *TINY_MODEL, *TINY_SYNTHETIC_DATA, "K=2", "iterations=3", f"run_dir={tmp_path}",
                                 "trainer.enable_progress_bar=false"])
    run = build_meta_learning(cfg)
    assert run.trainer.progress_bar_callback is None
    assert not any(isinstance(c, IterationProgressBar) for c in run.trainer.callbacks)


def test_steps_per_iteration_must_be_positive() -> None:
    from talkinghead.callbacks.progress import IterationProgressBar

    with pytest.raises(ValueError, match="at least 1"):
        IterationProgressBar(0)


def test_misleading_lightning_notes_are_dropped_and_others_kept() -> None:
    import logging

    from talkinghead.training.loggers import drop_lightning_notes

    log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    drop_lightning_notes()
    drop_lightning_notes()  # idempotent

    def shown(msg: str) -> bool:
        return bool(log.filter(logging.LogRecord(log.name, logging.INFO, __file__, 1, msg, None, None)))

    assert not shown("`Trainer.fit` stopped: `max_steps=1200` reached.")
    assert not shown("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
    assert shown("GPU available: False, used: False")
    assert sum(type(f).__name__ == "_DropLightningNotes" for f in log.filters) == 1
