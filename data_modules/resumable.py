"""A DataLoader that Lightning checkpoints can resume in the middle of an epoch.

Lightning saves ``state_dict()`` of every training loader that has one and hands it back through
``load_state_dict()`` before the resumed epoch starts.  We store how many batches of the current epoch were
trained on; the loader then tells its sampler to start after them, so a run killed mid-epoch and resumed
sees exactly the samples an uninterrupted run sees.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from torch.utils.data import DataLoader


class ResumableDataLoader(DataLoader):
    """``DataLoader`` + ``state_dict``/``load_state_dict`` for Lightning (sampler must have a ``start`` attribute).

    ``batches_done`` is a callable giving the batches of the current epoch already trained on (the DataModule
    reads it from its trainer's progress), evaluated when a checkpoint is written.
    """

    def __init__(self, *args: Any, batches_done: Callable[[], int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        return {"batches_done": int(self.batches_done()) if self.batches_done is not None else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        done = int(state.get("batches_done", 0))
        if done <= 0 or done >= len(self):  # at an epoch boundary the next epoch starts from its beginning
            return
        if not hasattr(self.sampler, "start"):
            warnings.warn(f"{type(self.sampler).__name__} cannot skip the {done} batches already trained on in this "
                          "epoch; they will be seen again", stacklevel=2)
            return
        self.sampler.start = done * int(self.batch_size or 1)


class ResumableStreamLoader(DataLoader):
    """``DataLoader`` of a stream (``IterableDataset`` with ``epoch``, ``resume_batches``, ``batch_workers``) that
    Lightning checkpoints can resume mid-epoch, with any number of workers.

    The stream is a pure function of (seed, epoch, rank, worker): ``state_dict`` records the epoch and the batches
    of it trained on (``progress`` reads them from the trainer); ``load_state_dict`` hands both to the dataset
    before its workers start, and each worker then skips exactly what it had produced (see
    ``VoxCelebStream.resume_role``). Workers are persistent, so the epoch counter lives on in them.
    """

    def __init__(self, *args: Any, progress: Callable[[], tuple[int, int]] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        epoch, done = self.progress() if self.progress is not None else (0, 0)
        return {"epoch": int(epoch), "batches_done": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, done = int(state.get("epoch", 0)), int(state.get("batches_done", 0))
        if done >= len(self.dataset.batch_workers(max(1, self.num_workers), epoch)):
            epoch, done = epoch + 1, 0  # saved at the end of an epoch: the next one starts afresh
        self.dataset.epoch, self.dataset.resume_batches = epoch, done
