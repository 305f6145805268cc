"""``make bench``: the speed figures of every stage in one table, also written as JSON under bench/results/.

    python -m talkinghead.tools.bench                 # CPU here; CUDA where present (--device picks)
    python -m talkinghead.tools.bench --quick         # a smoke run of every row at the smallest sizes (seconds)
    python -m talkinghead.tools.bench --only meta reenact --paper-batch 8

Rows (each a figure with its unit):

* meta-learning, one iteration (``d_steps_per_g`` D updates + one G/E update) of the real LightningModule under
  Lightning's Trainer, for the embedded default and for the paper's 256² model (K=8; batch per device of the GPU
  config on CUDA, ``--paper-batch`` on CPU): ms per iteration, samples/s and peak memory (CUDA: allocated;
  CPU: the process's resident set), on the plain path (fp32, eager, contiguous, for-loop Adam) and then the fast
  path in the same process, and their ratio.  With compile on, the compiled step is timed after its warm-up,
  and the compile time (first iterations minus the steady-state time) is printed apart.
* fine-tuning: seconds to make an avatar with T=8 at the default number of steps (experiments/finetune.yaml).
* reenactment: frames/s from landmarks to uint8 frames (landmark image, G with the avatar's ψ computed once,
  conversion), batch 1 and batched: the inference path of ``make reenact`` minus video decoding and encoding;
  also with the avatar exported to ONNX (``make export``, ψ' folded, fp32) run by onnxruntime, and its ratio to
  the PyTorch fast path (the export's seconds are printed apart, not timed in).
* data: landmark images/s, loader samples/s, preprocessing videos/min.

Timings are medians over whole timed windows, synchronised with the device only at the window's ends.  The
networks carry random weights (speed does not depend on them); where the VGG weight files are absent, the
paper's content loss runs random-weight VGG19 and VGGFace of the same shapes, and the row says so.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from data_modules.batch import split_batch
from data_modules.persons import SYNTHETIC_VIDEO_LENGTH
from talkinghead.config import REPO_ROOT
from talkinghead.speed import Speed

SECTIONS = ("meta", "finetune", "reenact", "data")
RESULTS_DIR = Path("bench/results")


# ------------------------------------------------------------------------------------------------ results
@dataclass
class Row:
    """One figure: ``section`` / ``name`` = ``value`` ``unit`` (``note``: how it was measured)."""

    section: str
    name: str
    value: float | None
    unit: str
    note: str = ""


class Results:
    def __init__(self, quick: bool, device: torch.device) -> None:
        self.rows: list[Row] = []
        self.quick, self.device = quick, device
        self.started = time.time()

    def add(self, section: str, name: str, value: float | None, unit: str, note: str = "") -> Row:
        row = Row(section, name, None if value is None else float(value), unit, note)
        self.rows.append(row)
        shown = "n/a" if value is None else f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
        print(f"  {name:<52} {shown:>10} {unit:<10} {note}", flush=True)
        return row

    def machine(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "device": str(self.device), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        }
        if self.device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(self.device)
        return info

    def table(self) -> str:
        width = max(len(r.name) for r in self.rows) if self.rows else 10
        lines = [f"{'section':<9} {'figure':<{width}} {'value':>12}  {'unit':<10} note"]
        for r in self.rows:
            v = "n/a" if r.value is None else f"{r.value:,.4g}" if abs(r.value) < 1e4 else f"{r.value:,.0f}"
            lines.append(f"{r.section:<9} {r.name:<{width}} {v:>12}  {r.unit:<10} {r.note}")
        return "\n".join(lines)

    def write(self, out_dir: Path, argv: Sequence[str]) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = out_dir / f"bench_{stamp}_{self.device.type}{'_quick' if self.quick else ''}.json"
        doc = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "seconds": round(time.time() - self.started, 1),
            "quick": self.quick, "command": "python -m talkinghead.tools.bench " + " ".join(argv),
            "machine": self.machine(), "rows": [asdict(r) for r in self.rows],
        }
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        tmp.replace(path)
        return path


# ------------------------------------------------------------------------------------------------ memory
class PeakRSS:
    """Peak resident set of this process while in use (sampled every 5 ms from /proc; ru_maxrss elsewhere)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())

    def __enter__(self) -> PeakRSS:
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float]]:
    """Yields a dict whose ``mb`` is filled on exit: CUDA peak allocated, or CPU peak RSS, in MiB."""
    out: dict[str, float] = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        torch.cuda.synchronize(device)
        out["mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        out["what"] = "GPU allocated"  # type: ignore[assignment]
    else:
        with PeakRSS() as rss:
            yield out
        out["mb"] = rss.peak / 2**20
        out["what"] = "process RSS"  # type: ignore[assignment]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------------------ meta-learning
class FixedBatch(torch.utils.data.IterableDataset):
    """One random batch of episodes, collated (and page-locked for CUDA) once and yielded again and again: the
    step's compute and its host-to-device copy, without the loader's work (the loader has its own rows)."""

    def __init__(self, batch: int, K: int, size: int, num_videos: int, pin: bool) -> None:
        g = torch.Generator().manual_seed(0)
        self.batch = {
            "frames": torch.rand(batch, K + 1, 3, size, size, generator=g) * 2 - 1,
            "landmark_images": torch.rand(batch, K + 1, 3, size, size, generator=g) * 2 - 1,
            "video_index": torch.arange(batch) % num_videos,
        }
        if pin:
            self.batch = {k: v.pin_memory() for k, v in self.batch.items()}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            yield self.batch


class WindowTimer:
    """Lightning callback: wall time of the first ``warmup`` iterations and of the ``timed`` ones after them."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        import pytorch_lightning as pl

        outer = self

        class _CB(pl.Callback):
            def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
                if batch_idx == 0:
                    sync(device)
                    outer.t0 = time.perf_counter()
                elif batch_idx == warmup:
                    sync(device)
                    outer.t1 = time.perf_counter()

            def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
                outer.batches = batch_idx + 1

            def on_train_end(self, trainer: Any, module: Any) -> None:
                sync(device)
                outer.t2 = time.perf_counter()

        self.callback = _CB()
        self.warmup = warmup
        self.t0 = self.t1 = self.t2 = 0.0
        self.batches = 0

    @property
    def warmup_s(self) -> float:
        return self.t1 - self.t0

    def per_iteration_s(self) -> float:
        return (self.t2 - self.t1) / max(self.batches - self.warmup, 1)


def content_loss_for_timing(loss_cfg: Any) -> tuple[Any, str]:
    """The paper's content loss from its weight files, else random-weight backbones of the same shapes."""
    from talkinghead.backbones.vgg19 import VGG19
    from talkinghead.backbones.vggface import VGGFace
    from talkinghead.backbones.weights import MissingWeightsError
    from talkinghead.losses.content import ContentLoss
    from talkinghead.training.build import build_content_loss

    try:
        return build_content_loss(loss_cfg), "VGG19+VGGFace weight files"
    except MissingWeightsError:
        return ContentLoss(1.0, 1.0, vgg19=VGG19(), vggface=VGGFace()), "random-weight VGGs (files absent)"


def meta_step(
    experiment: str, device: torch.device, speed: Speed, batch: int, warmup: int, timed: int,
    content: Any = None, overrides: Sequence[str] = (),
) -> dict[str, float]:
    """Time iterations of the real meta-learning module; returns ms/iteration, samples/s, peak MiB, warm-up s."""
    import pytorch_lightning as pl

    from talkinghead.config import compose
    from talkinghead.training.build import build_module

    cfg = compose("meta_learn", [f"experiment={experiment}", "logger=csv", *overrides])
    pl.seed_everything(0, verbose=False)
    speed.apply_process()
    num_videos = 64
    module = build_module(cfg, num_videos, speed, content_loss=content)  # content: the paper loss's VGGs, or None
    K, size = int(cfg.K), int(cfg.model.image_size)
    loader = torch.utils.data.DataLoader(FixedBatch(batch, K, size, num_videos, device.type == "cuda"),
                                         batch_size=None)
    timer = WindowTimer(warmup, device)
    trainer = pl.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=speed.precision,
        benchmark=speed.cudnn_benchmark, max_steps=(warmup + timed) * (1 + module.d_steps_per_g), max_epochs=-1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer.callback], limit_val_batches=0, num_sanity_val_steps=0,
    )
    with peak_memory(device) as mem:
        trainer.fit(module, loader)
    per = timer.per_iteration_s()
    del trainer, module, loader
    return {"ms": 1000 * per, "samples_s": batch / per, "peak_mb": mem["mb"], "memory": mem["what"],
            "warmup_s": timer.warmup_s, "warmup_iters": warmup, "steady_s": per}


def bench_meta(res: Results, args: argparse.Namespace) -> None:
    device = res.device
    fast = Speed().resolve(device)
    plans = [("embedded", "embedded default, 64², K=4", None, [], args.embedded_batch, args.warmup, args.steps)]
    from talkinghead.config import compose

    paper_cfg = compose("meta_learn", ["experiment=vox2_paper", "data=synthetic", "logger=csv"])
    one_gpu = split_batch(paper_cfg.data.get("global_batch_size"), paper_cfg.data.get("batch_size")).per_device
    paper_batch = args.paper_batch or (one_gpu if device.type == "cuda" else 2)
    if not args.skip_paper:
        content, content_note = content_loss_for_timing(paper_cfg.loss)
        k = ["K=2"] if args.quick else []  # --quick: a smoke run, not a figure
        plans.append(("vox2_paper", f"paper 256², K={2 if args.quick else 8}", content, ["data=synthetic", *k],
                      paper_batch, args.paper_warmup, args.paper_steps))
    for exp, label, content, overrides, batch, warmup, steps in plans:
        note_b = f"batch {batch}"
        if exp == "vox2_paper":
            note_b += f" ({'GPU config' if device.type == 'cuda' and not args.paper_batch else 'GPU config: 8'}); "
            note_b += content_note
        print(f"meta-learning, {label}, {note_b}")
        results = {}
        paths = (("plain", Speed.plain()), ("fast", replace(fast, compile=False)))
        if args.quick and exp == "vox2_paper":  # a smoke run: one 256² path is enough (a step is ~20 s on a CPU)
            paths = paths[:1]
        for name, speed in paths:
            # the same backbones on every path, in that path's memory format
            c = None if content is None else content.to(memory_format=speed.memory_format)
            r = meta_step(exp, device, speed, batch, warmup, steps, c, overrides)
            results[name] = r
            res.add("meta", f"{label}: {name} step", r["ms"], "ms/iter", f"{speed.describe()}; {note_b}")
            res.add("meta", f"{label}: {name} throughput", r["samples_s"], "samples/s")
            res.add("meta", f"{label}: {name} peak memory", r["peak_mb"], "MiB", r["memory"])
        if "fast" in results:
            res.add("meta", f"{label}: fast/plain speed-up", results["plain"]["ms"] / results["fast"]["ms"], "x",
                    "plain ms / fast ms, same process")
        compile_here = args.compile == "on" or (args.compile == "auto" and not args.quick and (
            device.type == "cuda" or exp == "embedded"))
        if compile_here:
            speed = replace(fast, compile=True)
            c = None if content is None else content.to(memory_format=speed.memory_format)
            r = meta_step(exp, device, speed, batch, max(warmup, 3), steps, c, overrides)
            compile_s = max(0.0, r["warmup_s"] - r["warmup_iters"] * r["steady_s"])
            res.add("meta", f"{label}: fast+compile step", r["ms"], "ms/iter", "after warm-up; compile time apart")
            res.add("meta", f"{label}: fast+compile speed-up", results["plain"]["ms"] / r["ms"], "x", "vs plain")
            res.add("meta", f"{label}: compile time", compile_s, "s", "first iterations minus steady time")
            torch._dynamo.reset()


# ------------------------------------------------------------------------------------------------ fine-tuning
def random_meta(experiment: str, overrides: Sequence[str] = ()) -> Any:
    """A MetaLearned of random networks of ``experiment``'s model (timing needs no trained weights)."""
    from omegaconf import OmegaConf

    from talkinghead.inference.avatar import MetaLearned, model_fingerprint
    from talkinghead.config import compose
    from talkinghead.training.build import build_networks

    cfg = compose("meta_learn", [f"experiment={experiment}", "logger=csv", *overrides])
    torch.manual_seed(0)
    e, g, d = build_networks(cfg.model, 64)
    fp = model_fingerprint(OmegaConf.to_container(cfg.model, resolve=True), g.state_dict())
    return MetaLearned(Path("random.ckpt"), cfg, e, g, d, fp)


def bench_finetune(res: Results, args: argparse.Namespace) -> None:
    from talkinghead.inference import shots as shots_mod
    from talkinghead.inference.fewshot import fit_avatar, settings_for

    device = res.device
    exps = [("embedded", [])] + ([("vox2_paper", ["data=synthetic", "loss=synthetic"])]
                                 if device.type == "cuda" and not args.skip_paper else [])
    for exp, overrides in exps:
        meta = random_meta(exp, overrides)
        T = 8
        person = shots_mod.resolve("syn0035/v00", meta.config.data, meta.image_size, synthetic_video_length=SYNTHETIC_VIDEO_LENGTH)
        shots = person.load(shots_mod.evenly(person.num_frames, T))
        # untimed: device start-up, allocator and cuDNN warm-up would otherwise count against the first row
        recipe = settings_for(meta.config)  # the model's own fine-tuning recipe, as make finetune runs it
        fit_avatar(meta, shots, mode="FT", settings=replace(recipe, epochs=None, steps=1, device=str(device)))
        for name, speed in (("plain", Speed.plain()), ("fast", Speed())):
            settings = replace(recipe, speed=speed, device=str(device))
            if args.quick:
                settings = replace(settings, epochs=None, steps=4)
            sync(device)
            t0 = time.perf_counter()
            fit_avatar(meta, shots, mode="FT", settings=settings)
            sync(device)
            seconds = time.perf_counter() - t0
            label = "embedded" if exp == "embedded" else "paper 256²"
            res.add("finetune", f"avatar T=8, {label}: {name}", seconds, "s",
                    f"{settings.describe(T)}, batch {settings.batch_size}; {speed.resolve(device, False).describe()}")


# ------------------------------------------------------------------------------------------------ reenactment
def frames_per_second(
    render: Callable[[Any], Any], points: Any, batch: int, size: int, min_seconds: float, device: torch.device
) -> float:
    """Frames/s of landmarks -> landmark images -> ``render`` -> uint8, ``batch`` frames at a time."""
    from talkinghead.landmarks.draw import landmark_image_tensor
    from talkinghead.visualize import to_uint8

    def run(n_batches: int) -> int:
        done = 0
        for b in range(n_batches):
            pts = [points[(b * batch + i) % len(points)] for i in range(batch)]
            y = torch.stack([landmark_image_tensor(p, size) for p in pts])
            for frame in render(y):
                to_uint8(frame)
            done += batch
        return done

    run(1 if min_seconds < 1 else 2)  # warm-up: allocator, cuDNN autotuning, CUDA graphs
    sync(device)
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < min_seconds or n < 2 * batch:
        n += run(1)
    return n / (time.perf_counter() - t0)


def bench_reenact(res: Results, args: argparse.Namespace) -> None:
    from talkinghead.inference.render import FrameRenderer
    from talkinghead.inference.shots import resolve

    device = res.device
    exps = [("embedded", [], "embedded avatar 64²")]
    if not args.skip_paper:
        exps.append(("vox2_paper", ["data=synthetic", "loss=synthetic"], "paper avatar 256²"))
    seconds = 0.5 if args.quick else args.reenact_seconds
    for exp, overrides, label in exps:
        meta = random_meta(exp, overrides)
        size = meta.image_size
        person = resolve("syn0020/v01", meta.config.data, size, synthetic_video_length=SYNTHETIC_VIDEO_LENGTH)
        points = person.load(list(range(64)))["landmarks"].numpy()
        with torch.no_grad():
            psi = meta.generator.eval().project(torch.rand(1, meta.generator.emb_dim))[0]
        speeds = [("plain", Speed.plain()), ("fast", Speed())]
        if device.type == "cuda" and args.compile != "off":
            speeds.append(("fast+compile", replace(Speed(), compile=True, compile_mode="reduce-overhead")))
        fast_fps = {}
        for name, speed in speeds:
            for batch in (1, args.reenact_batch):
                renderer = FrameRenderer(meta.generator, psi, device, speed)
                fps = frames_per_second(lambda y, r=renderer, b=batch: r.render(y, b), points, batch, size, seconds,
                                        device)
                res.add("reenact", f"{label}: {name}, batch {batch}", fps, "frames/s",
                        f"{renderer.speed.describe(inference=True)}; landmarks -> uint8 frame")
                if name == "fast":
                    fast_fps[batch] = fps
            if speed.compile is True:
                torch._dynamo.reset()
        bench_onnx(res, meta.generator, psi, points, size, seconds, label, (1, args.reenact_batch), fast_fps)


def bench_onnx(
    res: Results, generator: Any, psi: torch.Tensor, points: Any, size: int, seconds: float, label: str,
    batches: Sequence[int], fast_fps: dict[int, float],
) -> None:
    """Rows of the avatar exported to ONNX (ψ' folded, fp32) run by onnxruntime, beside the PyTorch renderer."""
    from talkinghead.inference.export import FoldedRenderer, MissingPackageError, OnnxRenderer, require, to_onnx

    try:
        ort = require("onnxruntime")
        t0 = time.perf_counter()
        proto = to_onnx(FoldedRenderer(generator, psi))
        export_s = time.perf_counter() - t0
    except MissingPackageError as exc:
        for batch in batches:
            res.add("reenact", f"{label}: onnxruntime, batch {batch}", None, "frames/s", str(exc))
        return
    cuda = res.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
    renderer = OnnxRenderer(proto.SerializeToString(), "cuda" if cuda else "cpu", threads=torch.get_num_threads())
    where = f"{renderer.providers[0]} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}"
    from talkinghead.landmarks.draw import landmark_image_tensor
    from talkinghead.inference.render import FrameRenderer

    y = torch.stack([landmark_image_tensor(p, size) for p in points[:4]])
    diff = (renderer.render(y) - FrameRenderer(generator, psi, "cpu", Speed.plain()).render(y)).abs()
    res.add("reenact", f"{label}: onnxruntime fp32 vs plain, max |diff|", float(diff.max()), "abs error",
            f"mean {float(diff.mean()):.2g}; 4 frames in [-1, 1]")
    for batch in batches:
        fps = frames_per_second(lambda y, b=batch: renderer.render(y, b), points, batch, size, seconds, res.device)
        res.add("reenact", f"{label}: onnxruntime fp32, batch {batch}", fps, "frames/s",
                f"{where}; export {export_s:.1f} s apart; landmarks -> uint8 frame")
        if batch in fast_fps:
            res.add("reenact", f"{label}: onnxruntime / fast, batch {batch}", fps / fast_fps[batch], "x",
                    "frames/s ratio, same process")


# ------------------------------------------------------------------------------------------------ data
def bench_data(res: Results, args: argparse.Namespace) -> None:
    from talkinghead.tools.bench_data import loader_rate, preprocess_rate, synthetic_source, vox2_augment
    from talkinghead.landmarks.draw import draw_landmarks

    heads_pts = _synthetic_points(256)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < (0.3 if args.quick else 2.0):
        draw_landmarks(heads_pts[n % len(heads_pts)], 256)
        n += 1
    res.add("data", "landmark images, 256²", n / (time.perf_counter() - t0), "images/s", "draw_landmarks, one thread")

    res.add("data", "embedded loader (synthetic, 64², K=4, batch 8)", _synthetic_loader_rate(args), "samples/s",
            "SyntheticDataModule, num_workers=0 as configured")

    voxmini = Path(args.voxmini)
    tmp = Path(tempfile.mkdtemp(prefix="talkinghead_bench_"))
    frames = 8 if args.quick else 32
    if voxmini.is_dir() and not args.quick:
        src, detector, what = voxmini, None, f"dlib on {voxmini.name}"
        workers = None
    else:
        src = tmp / "src"
        detector = synthetic_source(src, persons=2 if args.quick else 4, videos=1 if args.quick else 2,
                                    frames=frames + 4)
        what, workers = "synthetic mp4 + stand-in detector (no videos here)", 0 if args.quick else None
    rate, report = preprocess_rate(src, tmp / "shards", "dlib", detector, workers, frames_per_video=frames)
    procs = "in-process" if workers == 0 else f"{os.cpu_count()} processes"
    res.add("data", f"preprocessing, {frames} frames/video", rate, "videos/min",
            f"{what}; {report.videos_read} videos, {procs}")
    if report.kept:
        aug = vox2_augment()
        for w in ([0] if args.quick else [0, 2]):
            r = loader_rate(tmp / "shards", w, aug, 1.0 if args.quick else 8.0)
            res.add("data", f"VoxCeleb loader 256², K=8, batch 8, workers={w}", r, "samples/s",
                    "vox2.yaml augmentation")
    else:
        res.add("data", "VoxCeleb loader 256², K=8, batch 8", None, "samples/s", "no shard was written")


def _synthetic_points(size: int) -> Any:
    from talkinghead.config import compose
    from talkinghead.inference.shots import resolve

    cfg = compose("meta_learn", ["experiment=embedded", "logger=csv", f"model.image_size={size}"])
    return resolve("syn0001/v00", cfg.data, size, synthetic_video_length=16).load(list(range(16)))["landmarks"].numpy()


def _synthetic_loader_rate(args: argparse.Namespace) -> float:
    from hydra.utils import instantiate

    from talkinghead.config import compose

    cfg = compose("meta_learn", ["experiment=embedded", "logger=csv"])
    dm = instantiate(cfg.data)
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    next(it)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < (0.5 if args.quick else 3.0):
        try:
            n += next(it)["frames"].shape[0]
        except StopIteration:
            it = iter(dm.train_dataloader())
    return n / (time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m talkinghead.tools.bench", description=__doc__.split("\n\n")[0],
        epilog="Rows, their units and how each is measured: see the module docstring (docs/speed.md).",
    )
    p.add_argument("--quick", action="store_true", help="every row at the smallest sizes (a smoke run)")
    p.add_argument("--device", default="auto", help="auto (cuda when present) | cpu | cuda")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for the JSON (default bench/results)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="time torch.compile too: auto = on CUDA, and for the embedded model on CPU")
    p.add_argument("--skip-paper", action="store_true", help="leave the paper's 256² model out")
    p.add_argument("--paper-batch", type=int, default=None,
                   help="batch of the 256² step (default: the GPU config's 8 on CUDA, 2 on CPU)")
    p.add_argument("--embedded-batch", type=int, default=8, help="batch of the embedded step (its config: 8)")
    p.add_argument("--steps", type=int, default=20, help="timed iterations, embedded model")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first, embedded model")
    p.add_argument("--paper-steps", type=int, default=None, help="timed iterations, 256² model (CPU 2, CUDA 20)")
    p.add_argument("--paper-warmup", type=int, default=None, help="untimed iterations, 256² model (CPU 1, CUDA 3)")
    p.add_argument("--reenact-batch", type=int, default=None,
                   help="the batched reenactment row's batch (default: 16 on CUDA, 4 on CPU)")
    p.add_argument("--reenact-seconds", type=float, default=3.0, help="timing window per reenactment row")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch and onnxruntime (default: torch's, which onnxruntime then uses too)")
    p.add_argument("--voxmini", default=str(REPO_ROOT.parent / "shared" / "data" / "voxmini"),
                   help="real videos for the preprocessing row (default ../shared/data/voxmini; else synthetic)")
    args = p.parse_args(argv)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if args.quick:
        args.steps, args.warmup = 2, 1
        args.paper_batch = args.paper_batch or 1
        args.paper_steps, args.paper_warmup = 1, 1
        args.embedded_batch = min(args.embedded_batch, 4)
        args.reenact_batch = min(args.reenact_batch or 2, 2)
    args.reenact_batch = args.reenact_batch or (16 if cuda else 4)
    args.paper_steps = args.paper_steps or (20 if cuda else 2)
    args.paper_warmup = args.paper_warmup or (3 if cuda else 1)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("bench: --device cuda but no CUDA device here; use --device cpu", file=sys.stderr)
            return 2
    import logging
    import warnings

    import pytorch_lightning  # noqa: F401 - imported first: its import sets its loggers' level

    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    res = Results(args.quick, device)
    print(f"talkinghead bench on {device} ({res.machine().get('gpu', platform.processor() or 'cpu')}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}){' --quick' if args.quick else ''}")
    for section, fn in (("meta", bench_meta), ("finetune", bench_finetune), ("reenact", bench_reenact),
                        ("data", bench_data)):
        if section in args.only:
            fn(res, args)
    path = res.write(args.out, argv)
    print("\n" + res.table())
    print(f"\nwrote {path} ({time.time() - res.started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
