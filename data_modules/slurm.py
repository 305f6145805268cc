"""Preprocess on a cluster: submit the parts of ``data_modules.preprocess`` as one SLURM job array (submitit).

Usage (``make preprocess-slurm SRC=... OUT=... PARTS=64 ARGS=...`` runs this)::

    python -m data_modules.slurm --parts 64 --slurm-partition cpu --slurm-time 240 --slurm-cpus 16 \\
        --src /data/voxceleb2 --out /data/vox2-shards [--backend dlib ...] [--wait]

Array task ``i`` (1..N) runs ``python -m data_modules.preprocess ... --part i/N`` into the shared ``--out``;
``--wait`` waits for all of them and then merges (``--merge``). Without ``--wait`` it prints the job id and the
merge command to run once the array is done. Any other argument is a preprocessing argument (see
``python -m data_modules.preprocess --help``). ``--cluster local`` runs the same array as local processes
(submitit's local executor), ``--cluster slurm`` requires SLURM, ``auto`` picks SLURM where ``sbatch`` exists.
Job logs go to ``OUT/parts/submitit/``. A failed or pre-empted part is re-run by submitting again: parts
continue where they stopped, and finished ones return at once.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_modules.preprocess import (
    PARTS,
    Part,
    PreprocessConfig,
    PreprocessError,
    Report,
    build_parser as preprocess_parser,
    config_from_args,
    merge,
    preprocess,
)
from data_modules.sources import LayoutError, discover


@dataclass(frozen=True)
class PartJob:
    """The picklable callable one array task runs: ``PartJob(...)(i)`` preprocesses part ``i`` of ``count``."""

    src: str
    out: str
    count: int
    cfg: PreprocessConfig = PreprocessConfig()
    backend: str = "auto"
    layout: str = "auto"
    workers: int | None = None
    device: str | None = None
    landmarks: str = "track"  # track | detect (data_modules.preprocess --landmarks)
    detector: Any = field(default=None, compare=False)  # an already built detector (tests pass fakes)

    def __call__(self, index: int) -> Report:
        report = preprocess(
            self.src,
            self.out,
            self.cfg,
            backend=self.backend,
            workers=self.workers,
            layout=self.layout,
            detector=self.detector,
            device=self.device,
            landmarks=self.landmarks,
            progress=False,
            part=Part(index, self.count),
        )
        print(report.summary(), flush=True)
        if report.stopped:
            raise PreprocessError(f"part {index}/{self.count} stopped: {report.stopped}")
        return report


def make_executor(
    folder: str | Path,
    cluster: str | None = None,
    partition: str | None = None,
    time_min: int = 240,
    cpus: int = 8,
    gpus: int = 0,
    mem_gb: float | None = None,
    parallelism: int = 256,
    name: str = "preprocess",
    extra: dict[str, Any] | None = None,
):  # -> submitit.AutoExecutor
    """A submitit executor for the array: ``cluster`` None/"auto" (SLURM where present), "slurm", "local"."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster=None if cluster in (None, "auto") else cluster)
    params: dict[str, Any] = {"name": name, "timeout_min": int(time_min), "cpus_per_task": int(cpus),
                              "gpus_per_node": int(gpus), "slurm_array_parallelism": int(parallelism)}
    if mem_gb is not None:
        params["mem_gb"] = float(mem_gb)
    if partition:
        params["slurm_partition"] = partition
    if extra:
        params["slurm_additional_parameters"] = dict(extra)
    executor.update_parameters(**params)
    return executor


def submit(job: PartJob, executor) -> list:  # noqa: ANN001 (submitit executor / jobs)
    """Submit parts 1..N of ``job`` as one array; returns the submitit jobs (``job.result()`` waits)."""
    if job.count < 1:
        raise PreprocessError(f"parts must be >= 1, got {job.count}")
    (Path(job.out) / PARTS).mkdir(parents=True, exist_ok=True)
    return executor.map_array(job, list(range(1, job.count + 1)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m data_modules.slurm",
        description="Submit `python -m data_modules.preprocess --part i/N` for i = 1..N as one SLURM job array "
        "(submitit); every other argument is a preprocessing argument (--src, --out, --backend, ...).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--parts", type=int, default=64, help="N: array size, parts of the shard groups")
    p.add_argument("--cluster", default="auto", choices=("auto", "slurm", "local"),
                   help="slurm: submit with sbatch; local: run as local processes (submitit's local executor)")
    p.add_argument("--slurm-partition", default=None, help="SLURM partition (queue) of the array tasks")
    p.add_argument("--slurm-time", type=int, default=240, help="time limit of one task, minutes")
    p.add_argument("--slurm-cpus", type=int, default=8, help="CPUs per task (dlib: one worker per CPU)")
    p.add_argument("--slurm-gpus", type=int, default=0, help="GPUs per task (face-alignment runs on one)")
    p.add_argument("--slurm-mem", type=float, default=None, help="memory per task, GB (default: SLURM's)")
    p.add_argument("--slurm-array-parallelism", type=int, default=256, help="tasks of the array running at once")
    p.add_argument("--wait", action="store_true", help="wait for every part, then --merge")
    return p


def main(argv: list[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    pre = preprocess_parser().parse_args(rest)
    try:
        if pre.part or pre.merge or pre.overwrite:
            raise PreprocessError("--part, --merge and --overwrite are not for the submitter: it runs every part")
        discover(pre.src, pre.layout)  # a wrong --src fails here, not in N array tasks
        job = PartJob(pre.src, pre.out, args.parts, config_from_args(pre), pre.backend, pre.layout, pre.workers,
                      pre.device, pre.landmarks)
        executor = make_executor(Path(pre.out) / PARTS / "submitit", args.cluster, args.slurm_partition,
                                 args.slurm_time, args.slurm_cpus, args.slurm_gpus, args.slurm_mem,
                                 args.slurm_array_parallelism)
        jobs = submit(job, executor)
    except (PreprocessError, LayoutError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"submitted {len(jobs)} parts as job {jobs[0].job_id.split('_')[0]} ({executor.cluster}); logs: "
          f"{Path(pre.out) / PARTS / 'submitit'}")
    merge_cmd = " ".join(["python -m data_modules.preprocess", *rest, "--merge"])
    if not args.wait:
        print(f"when every part is done: {merge_cmd}")
        return 0
    failed = []
    for i, j in enumerate(jobs, 1):
        try:
            j.result()
        except Exception as e:  # noqa: BLE001 - a part's failure is reported, the others still count
            failed.append(f"{i}/{args.parts} ({str(e).strip().splitlines()[-1] if str(e).strip() else e})")
    if failed:
        print(f"error: {len(failed)} part(s) failed: {'; '.join(failed[:8])}; re-submit to continue them",
              file=sys.stderr)
        return 1
    try:
        report = merge(pre.src, pre.out, config_from_args(pre), backend=pre.backend, layout=pre.layout,
                       landmarks=pre.landmarks)
    except PreprocessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
