"""Stop cleanly when the cluster asks: finish the iteration, write ``last.ckpt``, requeue (SLURM), exit.

Two signals are handled while training runs:

* the **requeue signal** (``SIGUSR1``; SLURM sends it ``--signal=USR1@<seconds>`` before the time limit): write
  ``last.ckpt`` and, inside a SLURM job, ``scontrol requeue`` it; the next allocation resumes from the checkpoint;
* **SIGTERM** (preemption, ``scancel``, torchrun tearing its workers down, ``kill``): write ``last.ckpt`` and exit.
  A preempted job with SLURM's ``PreemptMode=REQUEUE`` is requeued by SLURM itself.

The checkpoint is written at the end of the iteration the signal arrived in (``on_train_batch_end``, where the
periodic checkpoints are written too), never from inside the signal handler: a checkpoint taken halfway through
an iteration (after D's step, before G's) would not resume exactly. Under DDP the ranks agree on the stop with a
one-integer all-reduce every ``sync_every`` iterations (10: SLURM's signal comes minutes before the limit, and a
collective with its host read-back on every step of a days-long run would cost a sync each time), so every rank
stops after the same iteration, whichever got the signal.
The run then ends with :class:`Stopped` (a ``SystemExit``, status 128 + the signal's number).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch

REQUEUE_SIGNAL = signal.SIGUSR1

#: signals received and not yet acted on (the handler only records them: see the module docstring)
_received: list[int] = []


def remember(signum: int, frame: FrameType | None = None) -> None:  # noqa: ARG001 - signal handler signature
    """Signal handler: record the signal; :class:`GracefulStop` acts on it at the end of the iteration."""
    _received.append(int(signum))


def listen(signals: tuple[int, ...]) -> dict[int, Any]:
    """Install :func:`remember` for ``signals`` (main thread only); returns the handlers it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, remember) for s in signals}


def slurm_job_id() -> str | None:
    """This SLURM job's id (``123`` or ``123_4`` in an array), or None outside SLURM."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue_slurm_job(job_id: str) -> str:
    """``scontrol requeue job_id``; returns what happened, in words (a failure is reported, not raised: the
    checkpoint is written already and ``make meta-learn-slurm`` resubmits)."""
    try:
        proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not requeue SLURM job {job_id} ({exc}): submit again to resume"
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        return f"could not requeue SLURM job {job_id} ({why[-1] if why else f'status {proc.returncode}'}): " \
               "submit again to resume"
    return f"requeued SLURM job {job_id}: the next allocation resumes from it"



#: Lightning's ``weights_only`` flag of a *save*: False writes the optimiser states, loops and callbacks with the
#: weights (what resuming needs).  Loading is another matter: every load goes through ``talkinghead.safe_load``.
FULL_STATE = False


def save_resumable(trainer: pl.Trainer, path: str | Path) -> None:
    """Write ``last.ckpt`` with everything an exact resume needs (every writer of it calls this)."""
    trainer.save_checkpoint(path, weights_only=FULL_STATE)


class Stopped(SystemExit):
    """Training stopped on a signal after writing ``checkpoint`` (``requeue``: the requeue signal was received)."""

    def __init__(self, signum: int, iteration: int, checkpoint: Path, requeue: bool) -> None:
        super().__init__(128 + int(signum))
        self.signum, self.iteration, self.checkpoint, self.requeue = int(signum), iteration, checkpoint, requeue


class GracefulStop(pl.callbacks.Checkpoint):
    """Acts on the requeue signal and SIGTERM at the end of an iteration (see the module docstring).

    A ``Checkpoint`` subclass so that Lightning runs it after the other callbacks' ``on_train_batch_end`` (the
    running average included), like ``ModelCheckpoint``: the checkpoint holds the finished iteration.
    ``requeue``: call ``scontrol requeue`` on the requeue signal inside a SLURM job (off: the launcher requeues).
    """

    def __init__(self, last: Path, requeue_signal: int = REQUEUE_SIGNAL, requeue: bool = True,
                 sync_every: int = 10) -> None:
        self.last = Path(last)
        self.requeue_signal = int(requeue_signal)
        self.requeue = requeue
        self.sync_every = max(1, int(sync_every))  # under DDP: iterations between the ranks' agreements
        self._previous: dict[int, Any] = {}
        self._flag: torch.Tensor | None = None  # the one-integer buffer of that agreement, kept across iterations

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # replaces Lightning's SIGTERM handler too: it would stop without a checkpoint (and its DDP broadcast from
        # inside the handler can meet another rank's gradient all-reduce)
        self._previous = listen((self.requeue_signal, signal.SIGTERM))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        want = 2 if self.requeue_signal in _received else 1 if signal.SIGTERM in _received else 0
        if trainer.world_size > 1:  # every rank stops after the same iteration
            if int(getattr(pl_module, "iteration", trainer.global_step)) % self.sync_every:
                return  # the same answer on every rank: they all agree at the same iterations
            device = trainer.strategy.root_device
            if self._flag is None or self._flag.device != device:
                self._flag = torch.zeros((), dtype=torch.int32, device=device)
            self._flag.fill_(want)
            torch.distributed.all_reduce(self._flag, op=torch.distributed.ReduceOp.MAX)
            want = int(self._flag.item())
        if not want:
            return
        signum = self.requeue_signal if want == 2 else int(signal.SIGTERM)
        _received.clear()
        save_resumable(trainer, self.last)
        iteration = int(getattr(pl_module, "iteration", trainer.global_step))
        if trainer.is_global_zero:
            what = f"stopped by {signal.Signals(signum).name} after iteration {iteration}: wrote {self.last}"
            job = slurm_job_id()
            if want == 2 and self.requeue and job:
                what += f"; {requeue_slurm_job(job)}"
            else:
                what += "; the same command resumes from it"
            print(what, file=sys.stderr, flush=True)
        raise Stopped(signum, iteration, self.last, requeue=want == 2)

    def _restore(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for s, handler in self._previous.items():
                signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        _received.clear()  # arrived after the last iteration: the run is complete, nothing to stop
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()
