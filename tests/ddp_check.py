"""Run a few meta-learning steps with the real `trainer=ddp` config on 2 CPU processes (gloo) and dump
every rank's parameters, for tests/test_ddp.py.  Usage: python tests/ddp_check.py OUT_DIR [overrides...]"""
from __future__ import annotations

import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from talkinghead.config import compose
from talkinghead.training.train import build_meta_learning


class DumpState(pl.Callback):
    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"state": state, "world_size": trainer.world_size, "iteration": pl_module.iteration},
                   self.out / f"rank{trainer.global_rank}.pt")


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    overrides = [
        "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
        "+trainer.strategy.process_group_backend=gloo", "logger=csv", f"run_dir={out / 'run'}",
        *sys.argv[2:],
    ]
    run = build_meta_learning(compose("meta_learn", overrides), extra_callbacks=[DumpState(out)])
    run.trainer.fit(run.module, datamodule=run.datamodule)


if __name__ == "__main__":
    main()
