"""The batch on N devices: ``data.global_batch_size`` is the batch of one step (FSTH's ``batch_size``), split over
the world size (devices x nodes); ``data.batch_size`` fixes the per-device batch instead (docs/paper.md row 38)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate

from data_modules.batch import BatchSizeError, split_batch
from talkinghead.training.build import world_size
from talkinghead.config import compose
from talkinghead.errors import ConfigError

EXPERIMENT_DIR = Path(__file__).resolve().parents[1] / "experiments" / "experiment"
EXPERIMENTS = sorted(p.stem for p in EXPERIMENT_DIR.glob("*.yaml"))


@pytest.mark.parametrize("world, per_device, text", [
    (1, 48, "global batch 48 = 1 GPU × 48"),
    (2, 24, "global batch 48 = 2 GPUs × 24"),
    (8, 6, "global batch 48 = 8 GPUs × 6"),
    (16, 3, "global batch 48 = 16 GPUs × 3"),
])
def test_the_global_batch_is_split_over_the_world(world: int, per_device: int, text: str) -> None:
    split = split_batch(48, None, world)
    assert (split.global_batch, split.per_device, split.world_size) == (48, per_device, world)
    assert split.describe("GPU") == text


def test_a_global_batch_the_world_does_not_divide_is_one_line() -> None:
    with pytest.raises(BatchSizeError) as info:
        split_batch(8, None, 3)
    msg = str(info.value)
    assert isinstance(info.value, ConfigError) and "\n" not in msg
    assert "data.global_batch_size=8" in msg and "3 devices" in msg and "data.batch_size" in msg


def test_a_per_device_batch_wins_and_the_global_one_follows() -> None:
    split = split_batch(8, 2, 8)
    assert (split.global_batch, split.per_device, split.per_device_fixed) == (16, 2, True)
    assert "per device" in split.describe()


@pytest.mark.parametrize("global_batch, batch, world", [(None, None, 1), (0, None, 1), (8, 0, 1), (8.0, None, 1),
                                                        (8, None, 0)])
def test_bad_batch_sizes_are_refused(global_batch, batch, world) -> None:
    with pytest.raises(BatchSizeError):
        split_batch(global_batch, batch, world)


@pytest.mark.parametrize("trainer, expected", [
    ({"accelerator": "cpu", "devices": 1}, 1),
    ({"accelerator": "cpu", "devices": 2}, 2),
    ({"accelerator": "gpu", "devices": 8, "num_nodes": 2}, 16),
    ({"accelerator": "cpu", "devices": "auto"}, 1),
])
def test_the_world_size_is_devices_times_nodes(trainer: dict, expected: int) -> None:
    assert world_size(trainer) == expected


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_a_global_batch_and_splits_it(experiment: str) -> None:
    cfg = compose("meta_learn", [f"experiment={experiment}", *(["data.root=/x"] if "paper" in experiment else [])])
    assert cfg.data.global_batch_size == 8 and cfg.data.batch_size is None, "FSTH's global batch 8, per GPU derived"
    assert [split_batch(cfg.data.global_batch_size, cfg.data.batch_size, w).per_device for w in (1, 2, 8)] == [8, 4, 1]
    with pytest.raises(BatchSizeError):
        split_batch(cfg.data.global_batch_size, cfg.data.batch_size, 16)


def test_the_embedded_default_still_trains_with_8_on_one_device() -> None:
    cfg = compose("meta_learn", [])
    assert world_size(cfg.trainer) == 1
    assert instantiate(cfg.data).batch_size == 8  # a DataModule built on its own: the global batch on one device
    assert instantiate(cfg.data, batch_size=3).batch_size == 3


def test_meta_learning_builds_its_data_with_the_split_batch_and_counts_epochs_in_global_batches(tmp_path: Path) -> None:
    from talkinghead.training.train import build_meta_learning, resolve_iterations

    from finetune_helpers import QUIET, TINY_MODEL

    tiny = [*QUIET, *TINY_MODEL, "data.num_identities=6", "data.test_identities=2", "data.videos_per_identity=2",
            "data.frames_per_video=8", "data.heldout_frames=4", "K=2", "epochs=1", f"run_dir={tmp_path}"]
    run = build_meta_learning(compose("meta_learn", [*tiny, "data.global_batch_size=4"]))
    assert run.datamodule.batch_size == 4 and run.batch.describe() == "global batch 4 = 1 device × 4"
    batches = len(run.datamodule.train_dataloader())  # one sample per training video: 4 persons x 2 videos / 4
    assert batches == 2 and run.trainer.max_steps == 2 * (1 + run.module.d_steps_per_g)
    # on two devices an epoch is half the steps: each step takes the global batch
    assert resolve_iterations(run.cfg, run.datamodule, 2) == 1
    with pytest.raises(BatchSizeError, match="does not split over 1 devices|whole number"):
        build_meta_learning(compose("meta_learn", [*tiny, "data.global_batch_size=0"]))
