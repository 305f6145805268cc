"""Meta-learning as a SLURM job that survives time limits and preemption (submitit): ``make meta-learn-slurm``.

Usage (``make meta-learn-slurm NODES=2 GPUS=8 PARTITION=gpu TIME=1440 EXP=vox2_paper DATA_ROOT=...`` runs this)::

    python -m talkinghead.training.launch --nodes 2 --gpus 8 --partition gpu --time 1440 \\
        experiment=vox2_paper data.root=/data/vox2-shards [key=value ...]

One SLURM task per GPU runs ``talkinghead meta-learn`` with the overrides given (plus ``trainer=ddp
trainer.num_nodes=N trainer.devices=G``; overrides given win). The job is submitted with ``--requeue`` and
``--signal=USR1@<--signal-s>``: before the time limit every task gets SIGUSR1, finishes its iteration, rank 0 writes
``<run_dir>/checkpoints/last.ckpt`` and runs ``scontrol requeue``, and the next allocation resumes from that
checkpoint exactly (``talkinghead.callbacks.preemption``). Preemption (SIGTERM) writes the checkpoint too.

The job id and the log folder go to ``<run_dir>/slurm.json``; submitting again while that job is pending or
running (``squeue``) says so instead of starting a second writer of the same run. ``--cluster local`` runs the same
job here with submitit's local executor (one task, no GPU needed), which requeues it the same way.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from talkinghead.callbacks.preemption import REQUEUE_SIGNAL, Stopped, listen
from talkinghead.config import compose, hydra_overrides
from talkinghead.errors import TalkingHeadError
from talkinghead.files import process_alive
from talkinghead.training.train import meta_learn

STATE = "slurm.json"  #: in the run folder: the job that writes it (id, cluster, logs)
LOGS = "submitit"  #: in the run folder: the jobs' logs and pickles


class LaunchError(TalkingHeadError):
    """The job cannot be submitted (no submitit, no SLURM, a job of this run still queued, sbatch failed)."""


@dataclass(frozen=True)
class MetaLearnJob:
    """What every task of the job runs (picklable): ``talkinghead meta-learn OVERRIDES``."""

    overrides: tuple[str, ...]

    def __call__(self) -> int:
        listen((REQUEUE_SIGNAL,))  # a signal before training starts is acted on after its first iteration
        try:
            meta_learn(compose("meta_learn", hydra_overrides(self.overrides)))
            return 0
        except TalkingHeadError as exc:  # one line in the job's .err log; the job fails, it is not requeued
            print(f"error: {exc}", file=sys.stderr, flush=True)
            raise
        except Stopped as stop:
            if stop.requeue and os.environ.get("SUBMITIT_EXECUTOR") == "local":
                from submitit.local.local import LOCAL_REQUEUE_RETURN_CODE  # submitit's "requeue me" exit status

                sys.exit(LOCAL_REQUEUE_RETURN_CODE)
            raise


def trainer_overrides(nodes: int, gpus: int) -> list[str]:
    """``trainer`` overrides for ``nodes`` x ``gpus`` (one task per GPU); none for a CPU job (``gpus=0``)."""
    if gpus <= 0:
        return []
    if nodes * gpus == 1:
        return ["trainer=gpu"]
    return ["trainer=ddp", f"trainer.num_nodes={nodes}", f"trainer.devices={gpus}"]


def job_state(state: dict[str, Any]) -> str | None:
    """The state of the job recorded in ``slurm.json`` while it is queued or running (``PENDING``, ``RUNNING``,
    ...), or None once it has left the queue."""
    if state.get("cluster") == "local":
        return "RUNNING" if process_alive(int(state.get("pid", 0))) else None
    if shutil.which("squeue") is None:
        raise LaunchError(f"cannot tell whether job {state.get('job_id')} of this run still runs: no squeue here")
    proc = subprocess.run(["squeue", "-h", "-j", str(state["job_id"]), "-o", "%T"], capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        if "invalid job id" in (proc.stderr or "").lower():
            return None
        why = (proc.stderr or proc.stdout).strip().splitlines()
        raise LaunchError(f"squeue failed on job {state['job_id']}: {why[-1] if why else proc.returncode}")
    return proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else None


def make_executor(folder: Path, cluster: str, name: str, nodes: int, gpus: int, time_min: int, partition: str | None,
                  cpus_per_task: int, mem_gb: float | None, signal_s: int, extra: dict[str, Any] | None = None):
    """The submitit executor of the job (``cluster``: ``slurm`` or ``local``)."""
    try:
        import submitit  # optional: only this launcher needs it (pip install -e '.[cluster]')
    except ImportError:
        raise LaunchError("submitit is not installed: pip install 'submitit>=1.5,<2' "
                          "(or pip install -e '.[cluster]')") from None
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params: dict[str, Any] = {"name": name, "timeout_min": int(time_min), "nodes": int(nodes),
                              "tasks_per_node": max(1, int(gpus)), "gpus_per_node": int(gpus),
                              "cpus_per_task": int(cpus_per_task)}
    if mem_gb is not None:
        params["mem_gb"] = float(mem_gb)
    if partition:
        params["slurm_partition"] = partition
    if cluster == "slurm":
        params["slurm_additional_parameters"] = {
            "signal": f"{signal.Signals(REQUEUE_SIGNAL).name.removeprefix('SIG')}@{int(signal_s)}",
            "requeue": True, **(extra or {})}
    executor.update_parameters(**params)
    return executor


def pick_cluster(cluster: str) -> str:
    """``auto``: SLURM where ``sbatch`` is on PATH; ``slurm`` without ``sbatch`` is a one-line error."""
    if cluster == "local":
        return "local"
    missing = [exe for exe in ("sbatch", "srun") if shutil.which(exe) is None]
    if missing:
        raise LaunchError(f"SLURM is absent here: no {' or '.join(missing)} on PATH (submit from a SLURM login node, "
                          "or --cluster local to run the same job on this machine)")
    return "slurm"


def submit(overrides: Sequence[str], nodes: int = 1, gpus: int = 1, time_min: int = 1440,
           partition: str | None = None, cluster: str = "auto", cpus_per_task: int = 8, mem_gb: float | None = None,
           signal_s: int = 120, extra: dict[str, Any] | None = None):  # -> submitit.Job
    """Check the config, refuse a second writer, submit the job; returns the submitit job."""
    if nodes < 1 or gpus < 0 or time_min < 1 or signal_s < 1:
        raise LaunchError(f"need nodes >= 1, gpus >= 0, time >= 1 min, signal >= 1 s; got {nodes}, {gpus}, "
                          f"{time_min}, {signal_s}")
    if signal_s >= time_min * 60:
        raise LaunchError(f"the requeue signal {signal_s} s before the end does not fit in a {time_min} min job")
    cluster = pick_cluster(cluster)
    overrides = [*trainer_overrides(nodes, gpus), *overrides]
    cfg = compose("meta_learn", hydra_overrides(overrides))  # a typo fails here, not in the queue
    run_dir = Path(cfg.run_dir).expanduser().absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    # the tasks' working folder may differ from this one
    overrides = [*(o for o in overrides if not o.startswith("run_dir=")), f"run_dir={run_dir}"]
    folder = run_dir / LOGS
    with open(run_dir / f".{STATE}.lock", "w") as lock:  # two submissions at once: one waits for the other
        fcntl.flock(lock, fcntl.LOCK_EX)
        state_file = run_dir / STATE
        if state_file.exists():
            state = json.loads(state_file.read_text())
            running = job_state(state)
            if running:
                cancel = "scancel" if state.get("cluster") == "slurm" else "kill"
                raise LaunchError(f"job {state['job_id']} of this run is {running.lower()} and writes {run_dir} "
                                  f"(logs: {state.get('logs')}): wait for it, or `{cancel} "
                                  f"{state['job_id'] if cancel == 'scancel' else state.get('pid')}` first")
        executor = make_executor(folder, cluster, f"meta-learn-{cfg.name}", nodes, gpus, time_min, partition,
                                 cpus_per_task, mem_gb, signal_s, extra)
        try:
            job = executor.submit(MetaLearnJob(tuple(overrides)))
        except (subprocess.CalledProcessError, OSError) as exc:
            raise LaunchError(f"sbatch failed: {last_line(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - submitit wraps sbatch's own errors in its FailedJobError
            if type(exc).__name__ != "FailedJobError":
                raise
            raise LaunchError(f"sbatch failed: {last_line(exc)}") from None
        state = {"job_id": job.job_id, "cluster": cluster, "logs": str(folder), "run_dir": str(run_dir),
                 "submitted": time.strftime("%Y-%m-%d %H:%M:%S"), "overrides": overrides}
        if cluster == "local":
            state["pid"] = job._process.pid  # the local executor's controller process (submitit keeps it private)
        state_file.write_text(json.dumps(state, indent=1) + "\n")
    return job


def last_line(exc: BaseException) -> str:
    text = (getattr(exc, "stderr", None) or getattr(exc, "output", None) or str(exc) or type(exc).__name__)
    text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def describe(job, run_dir: Path, nodes: int, gpus: int) -> str:  # noqa: ANN001 (submitit job)
    """What was submitted and how to watch it."""
    paths = job.paths
    where = f"{nodes} node(s) x {gpus} GPU(s)" if gpus else f"{nodes} node(s), CPU"
    watch = f"squeue -j {job.job_id}" if job.__class__.__name__.startswith("Slurm") else "local job"
    return (f"submitted meta-learning job {job.job_id} ({where}), run {run_dir}\n"
            f"  logs:       {paths.stdout}  (and .err; rank r: _r_log.out)\n"
            f"  watch:      {watch}; tail -f {paths.stderr}\n"
            f"  checkpoint: {run_dir / 'checkpoints' / 'last.ckpt'} (requeued jobs resume from it)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m talkinghead.training.launch",
        description="Submit `talkinghead meta-learn OVERRIDES` as a SLURM job (submitit), one task per GPU, that "
                    "writes last.ckpt and requeues itself before its time limit and on preemption.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", help="meta-learn overrides (key=value), e.g. experiment=vox2_paper")
    p.add_argument("--nodes", type=int, default=1, help="nodes")
    p.add_argument("--gpus", type=int, default=1, help="GPUs per node (one task each); 0: a CPU job")
    p.add_argument("--partition", default=None, help="SLURM partition (queue)")
    p.add_argument("--time", type=int, default=1440, help="time limit of one allocation, minutes (requeued after)")
    p.add_argument("--cpus-per-task", type=int, default=8, help="CPUs per task (data loader workers)")
    p.add_argument("--mem-gb", type=float, default=None, help="memory per node, GB (default: SLURM's)")
    p.add_argument("--signal-s", type=int, default=120,
                   help="seconds before the time limit that SIGUSR1 asks for the checkpoint and the requeue")
    p.add_argument("--cluster", default="auto", choices=("auto", "slurm", "local"),
                   help="local: run the job here (submitit's local executor)")
    p.add_argument("--wait", action="store_true", help="wait for the job to end (a local job's output follows)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        job = submit(args.overrides, args.nodes, args.gpus, args.time, args.partition, args.cluster,
                     args.cpus_per_task, args.mem_gb, args.signal_s)
    except TalkingHeadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state = json.loads((Path(job.paths.folder).parent / STATE).read_text())
    print(describe(job, Path(state["run_dir"]), args.nodes, args.gpus), flush=True)
    if not args.wait:
        return 0
    try:
        job.result()
    except Exception as exc:  # noqa: BLE001 - the job's error, reported as its last line
        print(f"error: job {job.job_id} failed: {last_line(exc)} (logs: {job.paths.stderr})", file=sys.stderr)
        return 1
    print(f"job {job.job_id} done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
