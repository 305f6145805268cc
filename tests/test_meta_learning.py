"""MetaLearningModule on fixed data: it learns, and the Lightning bookkeeping is right."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from helpers import FixedEpisodes, tiny_module


def trainer(max_steps: int, **kw) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, **kw,
    )


def test_overfits_one_fixed_batch() -> None:
    pl.seed_everything(0, verbose=False)
    data = FixedEpisodes(n=2, K=2)
    module = tiny_module(num_videos=2)
    batch = next(iter(DataLoader(data, batch_size=2)))
    start = (module.reconstruct(batch) - batch["frames"][:, -1]).abs().mean().item()
    iterations = 150
    trainer(iterations * 2).fit(module, DataLoader(data, batch_size=2))
    end = (module.reconstruct(batch) - batch["frames"][:, -1]).abs().mean().item()
    assert module.iteration == iterations, "global_step counts both optimisers' steps"
    assert end < 0.5 * start, f"generator L1 {start:.3f} -> {end:.3f}: did not overfit one batch"


def test_match_loss_pulls_the_embeddings_towards_W() -> None:
    pl.seed_everything(0, verbose=False)
    data = FixedEpisodes(n=2, K=2)
    module = tiny_module(num_videos=2, pixel=0.0, adversarial=0.0, feature_matching=0.0, match=10.0)
    batch = next(iter(DataLoader(data, batch_size=2)))

    def gap() -> float:
        with torch.no_grad():
            e = module.embedder.embed(batch["frames"][:, :2], batch["landmark_images"][:, :2])
            return (module.discriminator.W.weight - e).abs().mean().item()

    before = gap()
    trainer(40 * 2).fit(module, DataLoader(data, batch_size=2))
    assert gap() < 0.3 * before
