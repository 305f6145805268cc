"""The batch of one optimiser step and its split over the devices that train together.

``data.global_batch_size`` is the batch of one step, all devices together (FSTH's ``batch_size``, which its
``dataloaders/dataloader.py`` divides by the number of GPUs); every device loads ``global / world size`` samples.
``data.batch_size``, when set, fixes the per-device batch instead (the global one is then that times the world
size).  One rule for every stage that builds a DataModule: meta-learning derives it from the Trainer's world size,
anything else (one process) from a world of 1.
"""
from __future__ import annotations

from dataclasses import dataclass

from talkinghead.errors import ConfigError


class BatchSizeError(ConfigError):
    """The batch sizes of a data config cannot be split over the devices."""


@dataclass(frozen=True)
class BatchSplit:
    """``global_batch`` samples per optimiser step = ``world_size`` devices x ``per_device``."""

    global_batch: int
    per_device: int
    world_size: int
    per_device_fixed: bool = False  # data.batch_size was set: the per-device batch wins over data.global_batch_size

    def describe(self, device: str = "device") -> str:
        """``global batch 48 = 8 GPUs x 6`` (``device``: what one process drives, e.g. ``GPU``)."""
        unit = device if self.world_size == 1 else f"{device}s"
        text = f"global batch {self.global_batch} = {self.world_size} {unit} × {self.per_device}"
        return text + (" (data.batch_size per device)" if self.per_device_fixed else "")


def _whole(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BatchSizeError(f"{name} must be a whole number >= 1, got {value!r}")
    return value


def split_batch(global_batch_size: int | None, batch_size: int | None, world_size: int = 1) -> BatchSplit:
    """The per-device batch of ``global_batch_size`` over ``world_size`` devices, or the fixed ``batch_size``.

    Raises ``BatchSizeError`` (one line) when neither is set, or when ``world_size`` does not divide the global batch.
    """
    world = _whole("the world size (devices x nodes)", world_size)
    if batch_size is not None:
        per = _whole("data.batch_size", batch_size)
        return BatchSplit(per * world, per, world, per_device_fixed=True)
    if global_batch_size is None:
        raise BatchSizeError("set data.global_batch_size (samples per step, all devices together) or "
                             "data.batch_size (per device)")
    total = _whole("data.global_batch_size", global_batch_size)
    if total % world:
        raise BatchSizeError(
            f"data.global_batch_size={total} does not split over {world} devices: set data.global_batch_size to a "
            f"multiple of {world} or data.batch_size=<samples per device>")
    return BatchSplit(total, total // world, world)
