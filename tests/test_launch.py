"""Meta-learning on a cluster without a cluster: the requeue signal (SLURM's --signal=USR1@s) and SIGTERM write
last.ckpt after a whole iteration and stop, the requeued run ends equal to an uninterrupted one; the launcher
(submitit's local executor) requeues and resumes, refuses a second writer, and says what is missing."""
from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment

from finetune_helpers import QUIET, TINY_MODEL, TINY_SYNTHETIC_DATA
from talkinghead.callbacks import preemption
from talkinghead.callbacks.preemption import Stopped
from talkinghead.config import compose
from talkinghead.train import build_meta_learning

ROOT = Path(__file__).resolve().parents[1]
TINY = [*QUIET, *TINY_MODEL, *TINY_SYNTHETIC_DATA, "K=2", "iterations=6", "optim.d_steps_per_g=2", "speed=plain",
        "trainer.precision=32-true", "logger=csv"]


class SignalAt(pl.Callback):
    """Sends ``signum`` to this process at the start of iteration ``iteration`` (the middle of the run)."""

    def __init__(self, iteration: int, signum: int) -> None:
        self.iteration, self.signum = iteration, signum

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if pl_module.iteration == self.iteration:
            os.kill(os.getpid(), self.signum)


def fake_scontrol(folder: Path) -> Path:
    """An ``scontrol`` that records its arguments in ``folder/scontrol.log``; returns that log."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "scontrol.log"
    exe = folder / "scontrol"
    exe.write_text(f"#!/bin/sh\necho \"$@\" >> '{log}'\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return log


def slurm_env(monkeypatch, bin_dir: Path, job_id: str = "4242") -> None:
    """What srun sets for one task of a one-node job (Lightning then detects SLURM), and the fake scontrol."""
    for k, v in {"SLURM_JOB_ID": job_id, "SLURM_NTASKS": "1", "SLURM_NTASKS_PER_NODE": "1", "SLURM_PROCID": "0",
                 "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_JOB_NAME": "meta-learn",
                 "SLURM_NODELIST": "localhost", "SLURM_JOB_NUM_NODES": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def assert_same_parameters(a: pl.LightningModule, b: pl.LightningModule) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and "discriminator.W.weight" in sa
    for key in sa:
        assert torch.allclose(sa[key].float(), sb[key].float(), atol=1e-6, rtol=0), f"resumed run differs in {key}"


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> pl.LightningModule:
    """The uninterrupted reference run."""
    run = build_meta_learning(compose("meta_learn", [*TINY, f"run_dir={tmp_path_factory.mktemp('straight')}"]))
    run.trainer.num_sanity_val_steps = 0
    run.fit()
    assert run.module.iteration == 6
    return run.module


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM], ids=["requeue-signal", "sigterm"])
def test_a_signal_mid_run_writes_last_ckpt_requeues_and_the_resumed_run_ends_equal(
        tmp_path, monkeypatch, capsys, straight, signum) -> None:
    log = fake_scontrol(tmp_path / "bin")
    slurm_env(monkeypatch, tmp_path / "bin")
    preemption._received.clear()
    run_dir = tmp_path / "run"
    before = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    stopped = build_meta_learning(compose("meta_learn", [*TINY, f"run_dir={run_dir}"]),
                                  extra_callbacks=[SignalAt(3, signum)])
    assert isinstance(stopped.trainer._accelerator_connector.cluster_environment, SLURMEnvironment)
    assert not stopped.trainer._accelerator_connector.cluster_environment.auto_requeue, "ours requeues, not Lightning"
    stopped.trainer.num_sanity_val_steps = 0
    with pytest.raises(Stopped) as info:
        stopped.fit()
    assert info.value.code == 128 + signum and info.value.iteration == 4, "stops after the iteration it arrived in"
    assert {s: signal.getsignal(s) for s in before} == before, "the process's handlers are given back"
    err = capsys.readouterr().err
    assert f"stopped by {signal.Signals(signum).name} after iteration 4: wrote {run_dir / 'checkpoints' / 'last.ckpt'}" in err
    if signum == signal.SIGUSR1:
        assert log.read_text().split() == ["requeue", "4242"], "requeued exactly once (not by Lightning as well)"
        assert "requeued SLURM job 4242" in err
    else:
        assert not log.exists(), "SIGTERM (preemption, scancel) is not requeued by the job"
    assert not list(run_dir.glob("hpc_ckpt_*.ckpt")), "Lightning's mid-iteration HPC checkpoint is not written"

    # the next allocation: the same command
    resumed = build_meta_learning(compose("meta_learn", [*TINY, f"run_dir={run_dir}"]))
    assert resumed.ckpt_path == run_dir / "checkpoints" / "last.ckpt"
    resumed.trainer.num_sanity_val_steps = 0
    resumed.fit()
    assert resumed.module.iteration == 6
    assert_same_parameters(straight, resumed.module)
