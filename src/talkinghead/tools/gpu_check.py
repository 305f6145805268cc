"""``make gpu-check``: one prepared script for the first lent GPU (at most ~8 minutes), JSON plus a printed table.

Sections (each timed, each may fail on its own without losing the others; the JSON is rewritten after each):

* ``pytest``: ``pytest -m gpu`` (the tests marked for CUDA).
* ``meta``: the paper model (experiments/model/paper.yaml) at 256², K=8, for a few meta-learning iterations in
  bf16, eager and ``torch.compile``d: ms per iteration (median, after warm-up), peak GPU memory, and MFU from the
  FLOPs of one iteration counted with ``torch.utils.flop_counter.FlopCounterMode`` (D's updates and G/E's update,
  forward and backward) over the device's dense bf16 peak.  The content loss runs random-weight VGG19 + VGGFace
  of the right shapes where the weight files are absent (speed does not depend on the weights).
* ``memory``: peak GPU memory of an eager bf16 iteration at batch 1, 2, 4, 8 (OOM is recorded, not fatal).
* ``reenact``: frames/s of the paper generator at 256² from landmarks to uint8 frames, batch 1 and 8.
* ``ddp``: one DDP step on the GPU with the real ``trainer=ddp`` config (tests/ddp_check.py, one process).

``--cpu`` runs every section end to end on the CPU at tiny sizes (the embedded model narrowed to 32², compile with
dynamo's ``eager`` backend), so the script is known to work before a GPU is ever lent:

    python -m talkinghead.tools.gpu_check                 # on the GPU machine; writes gpu_check.json
    python -m talkinghead.tools.gpu_check --cpu --out /tmp/gpu_check.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from data_modules.persons import SYNTHETIC_VIDEO_LENGTH
from talkinghead.config import REPO_ROOT
from talkinghead.safe_load import safe_load

#: dense bf16 tensor-core peaks (FLOP/s) of GPUs this may be lent, by a substring of their CUDA name
PEAK_BF16 = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "GH200": 989e12, "A100": 312e12,
             "L40S": 362e12, "L4": 121e12, "A10": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12}
#: the CPU mode's tiny model: the embedded one at 32², narrow
TINY = ["model.image_size=32", "model.emb_dim=32", "model.embedder.base_channels=8", "model.embedder.max_channels=32",
        "model.generator.base_channels=8", "model.generator.max_channels=32", "model.generator.num_down=2",
        "model.generator.num_res=1", "model.discriminator.base_channels=8", "model.discriminator.max_channels=32",
        "K=2"]


class Plan:
    """Sizes of one mode (GPU: the paper's; ``--cpu``: tiny)."""

    def __init__(self, cpu: bool) -> None:
        self.cpu = cpu
        self.device = torch.device("cpu" if cpu else "cuda")
        if cpu:
            self.experiment, self.overrides = "embedded", list(TINY)
            self.batch, self.warmup, self.timed, self.batches = 2, 1, 2, (1, 2)
            self.reenact_seconds, self.backend = 0.3, "eager"
        else:
            self.experiment, self.overrides = "vox2_paper", ["data=synthetic"]
            self.batch, self.warmup, self.timed, self.batches = 8, 3, 5, (1, 2, 4, 8)
            self.reenact_seconds, self.backend = 3.0, "inductor"


# ------------------------------------------------------------------------------------------------ timing
class StepTimes:
    """Lightning callback: wall time of every iteration (synchronised at both ends), and the FLOPs of one."""

    def __init__(self, device: torch.device, count_at: int | None) -> None:
        import pytorch_lightning as pl

        outer = self
        self.times: list[float] = []
        self.flops: int | None = None
        self.count_at = count_at

        class _CB(pl.Callback):
            def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if batch_idx == outer.count_at:
                    from torch.utils.flop_counter import FlopCounterMode

                    outer._counter = FlopCounterMode(display=False)
                    outer._counter.__enter__()
                outer._t = time.perf_counter()

            def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if batch_idx == outer.count_at:
                    outer._counter.__exit__(None, None, None)
                    outer.flops = int(outer._counter.get_total_flops())
                else:
                    outer.times.append(time.perf_counter() - outer._t)

        self.callback = _CB()


def meta_iterations(plan: Plan, batch: int, compile_: bool, warmup: int, timed: int, count_flops: bool,
                    content: Any) -> dict[str, Any]:
    """Run ``warmup + timed`` (+1 counted) meta-learning iterations in bf16; ms/iteration, peak memory, FLOPs."""
    import pytorch_lightning as pl

    from talkinghead.tools.bench import FixedBatch, peak_memory
    from talkinghead.config import compose
    from talkinghead.speed import Speed
    from talkinghead.training.build import build_module

    cfg = compose("meta_learn", [f"experiment={plan.experiment}", "logger=csv", *plan.overrides])
    pl.seed_everything(0, verbose=False)
    speed = replace(Speed().resolve(plan.device), precision="bf16-mixed", compile=False)
    speed.apply_process()
    module = build_module(cfg, 64, speed, content_loss=content)
    if compile_:
        for net in (module.embedder, module.generator, module.discriminator):
            net.compile(backend=plan.backend)
    K, size = int(cfg.K), int(cfg.model.image_size)
    loader = torch.utils.data.DataLoader(FixedBatch(batch, K, size, 64, plan.device.type == "cuda"), batch_size=None)
    total = warmup + timed + (1 if count_flops else 0)
    timer = StepTimes(plan.device, total - 1 if count_flops else None)
    trainer = pl.Trainer(
        accelerator="gpu" if plan.device.type == "cuda" else "cpu", devices=1, precision="bf16-mixed",
        benchmark=speed.cudnn_benchmark, max_steps=total * (1 + module.d_steps_per_g), max_epochs=-1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer.callback], limit_val_batches=0, num_sanity_val_steps=0,
    )
    with peak_memory(plan.device) as mem:
        trainer.fit(module, loader)
    steady = timer.times[warmup:] or timer.times[-1:]
    out = {"batch": batch, "K": K, "image_size": size, "compile": compile_, "precision": "bf16-mixed",
           "ms_per_iteration": 1000 * statistics.median(steady), "warmup_s": sum(timer.times[:warmup]),
           "peak_mb": mem["mb"], "memory": mem["what"], "flops_per_iteration": timer.flops,
           "content_loss": content is not None}
    del trainer, module, loader
    if plan.device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def peak_flops(device: torch.device, given_tflops: float | None) -> tuple[float | None, str]:
    if given_tflops:
        return given_tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return None, "no known peak for a CPU (give --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16.items():
        if key in name:
            return value, f"{name}: dense bf16 peak {value / 1e12:.0f} TFLOP/s"
    return None, f"{name}: peak unknown (give --peak-tflops)"


# ------------------------------------------------------------------------------------------------ sections
def section_pytest(plan: Plan, timeout: float) -> dict[str, Any]:
    # --cpu: one module that holds gpu-marked tests (they skip without CUDA); a GPU runs them all
    target = [str(REPO_ROOT / "tests" / "test_speed.py")] if plan.cpu else [str(REPO_ROOT / "tests")]
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *target]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True, timeout=timeout)
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    summary = lines[-1].strip("= ") if lines else ""
    # rc 5: no test collected (none marked gpu in the target)
    return {"returncode": proc.returncode, "summary": summary, "ok": proc.returncode in (0, 5),
            "tail": proc.stdout[-1500:] + proc.stderr[-500:]}


def section_meta(plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    content, note = content_for(plan)
    peak, peak_note = peak_flops(plan.device, args.peak_tflops)
    out: dict[str, Any] = {"content_loss": note, "peak_flops": peak, "peak_note": peak_note}
    for name, compile_ in (("eager", False), ("compiled", True)):
        if compile_ and args.skip_compile:
            out[name] = {"skipped": "--skip-compile"}
            continue
        warmup = plan.warmup + (2 if compile_ else 0)  # the first compiled iterations compile
        r = meta_iterations(plan, plan.batch, compile_, warmup, plan.timed, count_flops=not compile_,
                            content=content)
        if compile_:
            r["flops_per_iteration"] = out["eager"].get("flops_per_iteration")  # the same arithmetic
            torch._dynamo.reset()
        flops = r.get("flops_per_iteration")
        r["mfu"] = flops / (r["ms_per_iteration"] / 1000) / peak if (flops and peak) else None
        r["achieved_tflops"] = flops / (r["ms_per_iteration"] / 1000) / 1e12 if flops else None
        out[name] = r
        write_partial(args, name, r)
    return out


def section_memory(plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    content, note = content_for(plan)
    rows: dict[str, Any] = {"content_loss": note}
    for b in plan.batches:
        try:
            r = meta_iterations(plan, b, False, 1, 1, count_flops=False, content=content)
            rows[str(b)] = {"peak_mb": r["peak_mb"], "memory": r["memory"], "ms_per_iteration": r["ms_per_iteration"]}
        except torch.cuda.OutOfMemoryError as exc:  # the table says which batch does not fit
            rows[str(b)] = {"peak_mb": None, "error": f"OOM: {str(exc).splitlines()[0][:200]}"}
            torch.cuda.empty_cache()
    return rows


def section_reenact(plan: Plan, args: argparse.Namespace) -> dict[str, Any]:
    from talkinghead.tools.bench import frames_per_second, random_meta
    from talkinghead.inference.render import FrameRenderer
    from talkinghead.inference.shots import resolve
    from talkinghead.speed import Speed

    meta = random_meta(plan.experiment, [*plan.overrides, "loss=synthetic"])
    size = meta.image_size
    person = resolve("syn0020/v01", meta.config.data, size, synthetic_video_length=SYNTHETIC_VIDEO_LENGTH)
    points = person.load(list(range(64)))["landmarks"].numpy()
    with torch.no_grad():
        psi = meta.generator.eval().project(torch.rand(1, meta.generator.emb_dim))[0]
    out: dict[str, Any] = {"image_size": size}
    for batch in (1, 8):
        renderer = FrameRenderer(meta.generator, psi, plan.device, replace(Speed(), compile=False))
        fps = frames_per_second(lambda y, r=renderer, b=batch: r.render(y, b), points, batch, size,
                                plan.reenact_seconds, plan.device)
        out[f"batch_{batch}"] = {"frames_per_s": fps, "speed": renderer.speed.describe(inference=True)}
    return out


def section_ddp(plan: Plan, args: argparse.Namespace, out_dir: Path, timeout: float) -> dict[str, Any]:
    """tests/ddp_check.py with one process on this device (nccl on CUDA, gloo on the CPU)."""
    over = ["trainer.devices=1", "iterations=2", "data.batch_size=2", "data.num_identities=4", "data.test_identities=1",
            "data.videos_per_identity=1", "callbacks.val_every_n_iterations=1000",
            "callbacks.sample_every_n_iterations=1000", "callbacks.metrics_every_n_iterations=0",
            "trainer.enable_progress_bar=false"]
    if plan.cpu:
        over += TINY
    else:
        over += ["trainer.accelerator=gpu", "trainer.strategy.process_group_backend=nccl", "model=paper",
                 "model.image_size=256", "K=8", "loss=synthetic"]
    cmd = [sys.executable, str(REPO_ROOT / "tests" / "ddp_check.py"), str(out_dir), *over]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=out_dir, env=child_env(), capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {"returncode": proc.returncode, "seconds": seconds,
                              "backend": "gloo" if plan.cpu else "nccl"}
    dump = out_dir / "rank0.pt"
    if proc.returncode == 0 and dump.exists():
        state = safe_load(dump, "DDP check dump")
        result.update(world_size=state["world_size"], iterations=state["iteration"],
                      finite=all(bool(torch.isfinite(v).all()) for v in state["state"].values()
                                 if v.is_floating_point()))
    else:
        result["tail"] = proc.stderr[-2000:]
    result["ok"] = proc.returncode == 0 and result.get("iterations") == 2 and bool(result.get("finite"))
    return result


# ------------------------------------------------------------------------------------------------ helpers
_CONTENT: dict[bool, tuple[Any, str]] = {}


def content_for(plan: Plan) -> tuple[Any, str]:
    """The paper's content loss for the GPU run (random-weight VGGs where files are absent); none on --cpu."""
    if plan.cpu:
        return None, "off (--cpu: the embedded loss)"
    if plan.cpu not in _CONTENT:
        from talkinghead.tools.bench import content_loss_for_timing
        from talkinghead.config import compose

        cfg = compose("meta_learn", [f"experiment={plan.experiment}", "logger=csv", *plan.overrides])
        content, note = content_loss_for_timing(cfg.loss)
        _CONTENT[plan.cpu] = (content.to(plan.device, memory_format=torch.channels_last), note)
    return _CONTENT[plan.cpu]


def child_env() -> dict[str, str]:
    paths = [str(REPO_ROOT / "src"), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in paths if p))


def machine() -> dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or
            platform.machine(), "cpus": os.cpu_count(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=props.total_memory / 2**30, gpus=torch.cuda.device_count())
    return info


_RESULTS: dict[str, Any] = {}


def write_partial(args: argparse.Namespace, key: str, value: Any) -> None:
    _RESULTS.setdefault("partial", {})[key] = value
    write(args)


def write(args: argparse.Namespace) -> None:
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_RESULTS, indent=2, default=str))
    tmp.replace(path)


def fmt(v: Any, spec: str = ".1f") -> str:
    return "n/a" if v is None else format(v, spec)


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []
    s = results["sections"]
    for name, sec in s.items():
        if sec.get("status") != "ok":
            rows.append((name, f"{sec.get('status')}: {sec.get('error', '')}"[:110]))
    if s.get("pytest", {}).get("status") == "ok":
        rows.append(("pytest -m gpu", s["pytest"]["result"]["summary"]))
    meta = s.get("meta", {}).get("result", {})
    for name in ("eager", "compiled"):
        r = meta.get(name)
        if r and "ms_per_iteration" in r:
            mfu = r.get("mfu")
            rows.append((f"meta {name} (bf16, batch {r['batch']}, {r['image_size']}², K={r['K']})",
                         f"{r['ms_per_iteration']:.1f} ms/iter, peak {fmt(r['peak_mb'], '.0f')} MiB ({r['memory']}), "
                         f"{fmt(r.get('achieved_tflops'), '.4g')} TFLOP/s, MFU {'n/a' if mfu is None else f'{100 * mfu:.1f}%'}"))
    if meta.get("eager", {}).get("flops_per_iteration"):
        rows.append(("FLOPs per iteration (counted)", f"{meta['eager']['flops_per_iteration'] / 1e9:.4g} GFLOP"))
    for b, r in s.get("memory", {}).get("result", {}).items():
        if isinstance(r, dict):
            rows.append((f"peak memory, batch {b}", r.get("error") or f"{fmt(r['peak_mb'], '.0f')} MiB ({r['memory']})"))
    re = s.get("reenact", {}).get("result", {})
    for k in ("batch_1", "batch_8"):
        if k in re:
            rows.append((f"reenact {re['image_size']}², {k.replace('_', ' ')}", f"{re[k]['frames_per_s']:.1f} frames/s"))
    ddp = s.get("ddp", {}).get("result")
    if ddp:
        rows.append(("DDP step", f"{'ok' if ddp['ok'] else 'FAILED'} ({ddp['backend']}, {ddp['seconds']:.0f} s)"))
    width = max(len(a) for a, _ in rows) if rows else 10
    return "\n".join(f"  {a:<{width}}  {b}" for a, b in rows)


def run_section(name: str, fn: Callable[[], Any], deadline: float, need_s: float) -> dict[str, Any]:
    left = deadline - time.monotonic()
    if left < need_s:
        return {"status": "skipped", "error": f"{left:.0f} s left of the budget, needs ~{need_s:.0f} s"}
    t0 = time.perf_counter()
    try:
        result = fn()
        status = "ok" if not (isinstance(result, dict) and result.get("ok") is False) else "failed"
        return {"status": status, "seconds": time.perf_counter() - t0, "result": result}
    except Exception as exc:  # noqa: BLE001 - one section's failure must not lose the others
        return {"status": "error", "seconds": time.perf_counter() - t0,
                "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m talkinghead.tools.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="every section on the CPU at tiny sizes (a smoke run)")
    p.add_argument("--out", default="gpu_check.json", help="the JSON file to write (default gpu_check.json)")
    p.add_argument("--budget-s", type=float, default=480.0, help="skip sections that would not fit (default 480)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU")
    p.add_argument("--only", nargs="*", default=None, choices=["pytest", "meta", "memory", "reenact", "ddp"])
    p.add_argument("--skip-compile", action="store_true", help="time eager only")
    args = p.parse_args(argv)
    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA device here: run with --cpu (make gpu-check CPU=1) for the smoke run", file=sys.stderr)
        return 2
    plan = Plan(args.cpu)
    start, deadline = time.perf_counter(), time.monotonic() + args.budget_s
    _RESULTS.clear()
    _RESULTS.update({"mode": "cpu" if args.cpu else "gpu", "machine": machine(), "argv": list(argv or sys.argv[1:]),
                     "sections": {}})
    out_dir = Path(args.out).resolve().parent / (Path(args.out).stem + "_ddp")
    out_dir.mkdir(parents=True, exist_ok=True)
    # order: what is worth most when the budget runs short first; compile (the longest) inside meta
    plan_sections = [
        ("pytest", lambda: section_pytest(plan, timeout=max(30.0, min(150.0, deadline - time.monotonic() - 300))), 20),
        ("meta", lambda: section_meta(plan, args), 30),
        ("memory", lambda: section_memory(plan, args), 20),
        ("reenact", lambda: section_reenact(plan, args), 10),
        ("ddp", lambda: section_ddp(plan, args, out_dir, timeout=max(20.0, deadline - time.monotonic())), 20),
    ]
    for name, fn, need in plan_sections:
        if args.only is not None and name not in args.only:
            continue
        print(f"gpu-check: {name} ...", flush=True)
        _RESULTS["sections"][name] = run_section(name, fn, deadline, need)
        write(args)
    _RESULTS.pop("partial", None)
    _RESULTS["seconds"] = time.perf_counter() - start
    write(args)
    print(f"\ngpu-check ({_RESULTS['mode']}, {_RESULTS['machine'].get('gpu', 'CPU')}) in {_RESULTS['seconds']:.0f} s:")
    print(table(_RESULTS))
    print(f"JSON: {args.out}")
    bad = [n for n, s in _RESULTS["sections"].items() if s["status"] not in ("ok",)]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
