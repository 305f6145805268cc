"""One worker of ``torchrun --nproc-per-node=2 --max-restarts=1`` meta-learning on CPU (gloo), for
tests/test_launch.py: with ``KILL_RANK=r KILL_AT=i`` rank r SIGKILLs itself at the start of iteration i in the
first attempt (TORCHELASTIC_RESTART_COUNT=0); every rank dumps its final parameters to OUT/rank<r>.pt.
Usage: torchrun ... tests/torchrun_check.py OUT [overrides...]"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytorch_lightning as pl
import torch

from talkinghead.config import compose
from talkinghead.training.train import build_meta_learning


class KillAt(pl.Callback):
    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.iteration == self.iteration:
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rank, attempt = int(os.environ["RANK"]), int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    kill = [KillAt(int(os.environ["KILL_AT"]))] if attempt == 0 and str(rank) == os.environ.get("KILL_RANK") else []
    overrides = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                 "+trainer.strategy.process_group_backend=gloo", f"run_dir={out / 'run'}", *sys.argv[2:]]
    run = build_meta_learning(compose("meta_learn", overrides), extra_callbacks=kill)
    run.trainer.num_sanity_val_steps = 0
    (out / f"attempt{attempt}_rank{rank}.resumed").write_text(str(run.ckpt_path))
    run.fit()
    state = {k: v.detach().cpu().clone() for k, v in run.module.state_dict().items()}
    torch.save({"state": state, "iteration": run.module.iteration}, out / f"rank{rank}.pt")


if __name__ == "__main__":
    main()
