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
