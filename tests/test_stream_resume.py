"""Exact mid-epoch resume of the VoxCeleb stream with 2 loader workers: the loader continues where it stopped, and
a killed-and-resumed meta-learning run ends with the same parameters as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from data_modules.voxceleb import VoxCeleb2DataModule

AUG = {"HorizontalFlip": {"p": 0.5}, "ColorJitter": {"brightness": 0.2, "p": 0.5}}


def _dm(root: Path) -> VoxCeleb2DataModule:
    # 3 training shards over 2 workers: 4 and 2 videos, so the workers' batch counts differ
    return VoxCeleb2DataModule(root, K=2, image_size=32, batch_size=1, num_workers=2, test_persons=["id00004"],
                               augment=AUG, seed=3)


def _epochs(loader, n: int) -> list[tuple[str, torch.Tensor]]:
    return [(b["video_id"][0], b["frames"]) for _ in range(n) for b in loader]


def test_the_stream_resumes_mid_epoch_exactly(synthetic_shards):
    root, _ = synthetic_shards
    straight = _epochs(_dm(root).train_dataloader(), 2)
    assert len(straight) == 12 and _dm(root).train_dataset().batch_workers(2, 0) == [0, 1, 0, 1, 0, 0]
    for done in (1, 3, 5):  # worker 1's turn next, worker 0's next, and after worker 1 ran out
        loader = _dm(root).train_dataloader()
        loader.load_state_dict({"epoch": 0, "batches_done": done})
        resumed = _epochs(loader, 2)[: 12 - done]
        assert [v for v, _ in resumed] == [v for v, _ in straight[done:]], f"resumed after {done} batches"
        for (_, a), (_, b) in zip(resumed, straight[done:]):
            assert torch.equal(a, b), "same frames, same augmentation"
    end = _dm(root).train_dataloader()
    end.load_state_dict({"epoch": 0, "batches_done": 6})  # saved at the end of the epoch: the next one
    assert [v for v, _ in _epochs(end, 1)] == [v for v, _ in straight[6:]]


@pytest.mark.slow
def test_killed_and_resumed_meta_learning_on_shards_equals_an_uninterrupted_run(tmp_path, synthetic_shards):
    from finetune_helpers import QUIET, TINY_MODEL
    from test_training_synthetic import CrashAt

    from talkinghead.config import compose
    from talkinghead.training.train import build_meta_learning

    root, _ = synthetic_shards
    tiny = [*QUIET, *TINY_MODEL, "data=vox2", f"data.root={root}", "model.landmarks=ibug68",  # 68-point shards
            "data.num_workers=2", "data.batch_size=1",
            "data.test_persons=[id00004]", "data.max_val_videos=1", "data.seed=3", "K=2", "iterations=5",
            "callbacks.ckpt_every_n_iterations=3", "trainer=cpu", "speed=plain"]
    straight = build_meta_learning(compose("meta_learn", [*tiny, f"run_dir={tmp_path / 'a'}"]))
    straight.trainer.num_sanity_val_steps = 0
    straight.fit()

    # epochs of 6 batches: the last checkpoint (iteration 3) is mid-epoch, with worker 1's batch next while a
    # fresh loader asks worker 0 first
    crashed = build_meta_learning(compose("meta_learn", [*tiny, f"run_dir={tmp_path / 'b'}"]),
                                  extra_callbacks=[CrashAt(4)])
    crashed.trainer.num_sanity_val_steps = 0
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.fit()
    resumed = build_meta_learning(compose("meta_learn", [*tiny, f"run_dir={tmp_path / 'b'}"]))
    assert resumed.ckpt_path is not None
    resumed.trainer.num_sanity_val_steps = 0
    resumed.fit()
    assert resumed.module.iteration == straight.module.iteration == 5
    a, b = straight.module.state_dict(), resumed.module.state_dict()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), f"resumed run differs in {key}"
