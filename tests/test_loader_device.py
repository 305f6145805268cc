"""Loaders: workers live across epochs (and validations); frames travel as uint8 and become floats on the device."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from data_modules.synthetic import SyntheticDataModule
from data_modules.voxceleb import VoxCeleb2DataModule
from talkinghead.visualize import batch_to_float, from_uint8


class _RecordStart:
    """worker_init_fn that leaves one file per worker start (works across processes)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, worker_id: int) -> None:
        (self.folder / f"{os.getpid()}-{worker_id}").touch()


def _starts(folder: Path) -> int:
    return len(list(folder.iterdir()))


def test_voxceleb_loader_workers_persist_across_epochs_and_validations(tmp_path, synthetic_shards):
    root, _ = synthetic_shards
    dm = VoxCeleb2DataModule(root, K=2, image_size=32, batch_size=2, num_workers=2, test_persons=["id00004"],
                             augment=None)
    train, val = dm.train_dataloader(), dm.val_dataloader()
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    train.worker_init_fn, val.worker_init_fn = _RecordStart(tmp_path / "train"), _RecordStart(tmp_path / "val")
    picks = []
    for _ in range(3):  # three epochs, each followed by a validation
        batches = list(train)
        assert sorted(v for b in batches for v in b["video_id"]) == sorted(v.video_id for v in dm.train_videos)
        picks.append(float(torch.cat([b["landmarks"] for b in batches]).sum()))
        assert sum(len(b["video_id"]) for b in val) == 2
    assert _starts(tmp_path / "train") == 2 and _starts(tmp_path / "val") == 2, "workers started once"
    assert len(set(picks)) == 3, "the persistent workers still move on to the next epoch's frames"


def test_synthetic_training_batches_are_uint8_and_the_module_converts_them_on_the_device():
    from talkinghead.config import compose
    from talkinghead.training.train import build_meta_learning

    dm = SyntheticDataModule(num_identities=6, videos_per_identity=1, test_identities=2, frames_per_video=8,
                             heldout_frames=4, K=2, image_size=32, batch_size=2)
    raw = next(iter(dm.train_dataloader()))
    assert raw["frames"].dtype == raw["landmark_images"].dtype == torch.uint8
    run = build_meta_learning(compose("meta_learn", ["~logger", "model.image_size=32", "K=2"]))
    converted = run.module.on_after_batch_transfer(dict(raw), 0)
    for key in ("frames", "landmark_images"):
        assert converted[key].dtype == torch.float32
        torch.testing.assert_close(converted[key], from_uint8(raw[key].movedim(-3, -1).numpy()), rtol=0, atol=0)
    assert torch.equal(converted["landmarks"], raw["landmarks"])
    again = batch_to_float(converted)  # idempotent: float batches (validation, fine-tuning) pass unchanged
    assert again["frames"] is converted["frames"]
