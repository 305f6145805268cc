"""The Python API of talkinghead's user-facing steps: make an avatar, drive it, list what the runs folder holds.

The ``finetune`` and ``reenact`` commands (``talkinghead.cli``) and the demo page (``talkinghead.demo``) are thin
layers over these functions; neither calls the other.  Long steps report through ``progress(fraction, message)``
(fraction in [0, 1]) when a callback is given.

    from talkinghead import api
    made = api.make_avatar("syn0035/v00", T=8, mode="FT")                 # -> AvatarResult (made.path: avatar.pt)
    clip = api.drive(made.path, "syn0020/v01", "out.mp4", api.DriveOptions(side_by_side=True))  # -> DriveResult
    for run in api.list_runs("runs"): print(run.name, run.iterations, len(run.samples))
"""

from __future__ import annotations

import csv
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from data_modules.persons import SYNTHETIC_VIDEO_LENGTH
from talkinghead.inference import shots as shots_mod
from talkinghead.inference.avatar import (
    Avatar,
    MetaLearned,
    load_avatar,
    load_meta_learned,
    resolve_checkpoint,
    save_avatar,
)
from talkinghead.decode import one_job
from talkinghead.errors import ConfigError
from talkinghead.evaluation.evaluate import held_out_videos
from talkinghead.inference.export import avatar_renderer, default_out
from talkinghead.inference.export import export_avatar as export
from talkinghead.inference.fewshot import MODES, FineTuned, FineTuneSettings, fit_avatar, settings_for
from talkinghead.landmarks.detectors import LandmarkDetector
from talkinghead.landmarks.sets import absent_note
from talkinghead.modules.finetune import initial_psi
from talkinghead.outputs import check_outputs
from talkinghead.inference.paste import paste_frames
from talkinghead.inference.reenact import DriveOptions, ReenactError, driver_points, load_driver, render_frames
from talkinghead.inference.render import AvatarFrames, FrameRenderer, pick_device
from talkinghead.inference.shots import probe_video as probe
from talkinghead.speed import Speed
from talkinghead.video import side_by_side_frames, write_video
from talkinghead.visualize import make_grid, save_png

#: ``progress(fraction in [0, 1], message)``
Progress = Callable[[float, str], None]


def _report(progress: Progress | None, fraction: float, message: str) -> None:
    if progress is not None:
        progress(float(min(1.0, max(0.0, fraction))), message)


def slug(text: str) -> str:
    """A folder-safe name for an id or path."""
    text = Path(text).stem if ("." in Path(text).name and "/" in text and Path(text).suffix) else text
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "avatar"


def load_model(ckpt: str | Path | None = None, runs_dir: str | Path = "runs") -> MetaLearned:
    """The meta-learned model of ``ckpt``, or of the newest ``runs_dir/*/checkpoints/last.ckpt``."""
    return load_meta_learned(resolve_checkpoint(None if ckpt is None else str(ckpt), runs_dir))


def held_out_ids(meta: MetaLearned, data_root: str | None = None) -> list[str]:
    """Video ids of the persons the model never saw in meta-learning (the ones ``make evaluate`` scores)."""
    return held_out_videos(meta.config, data_root)


# ------------------------------------------------------------------------------------------------ avatars
@dataclass
class AvatarResult:
    """What :func:`make_avatar` made.

    ``shots``: the T frames used (``frames``, ``landmark_images`` (T, 3, S, S) in [-1, 1], ``landmarks``
    (T, 68, 2)); ``preview``: frames outside the T (the T frames themselves when there are none, see
    ``preview_unseen``) with the avatar's renders ``fake`` and, for FT, the FF renders ``ff`` (N, 3, S, S).
    """

    path: Path
    avatar: Avatar
    fitted: FineTuned
    shots: dict[str, torch.Tensor]
    preview: dict[str, torch.Tensor]
    preview_unseen: bool
    grid_path: Path
    video_path: Path
    caption: str
    num_frames: int
    notes: list[str] = field(default_factory=list)
    logger: Any = False


@one_job  # everything it decodes is one job's budget (talkinghead.decode)
def make_avatar(
    source: str | Path | Sequence[Path],
    *,
    T: int = 8,
    mode: str = "FT",
    meta: MetaLearned | None = None,
    ckpt: str | Path | None = None,
    runs_dir: str | Path = "runs",
    settings: FineTuneSettings | None = None,
    out: str | Path | None = None,
    out_dir: str | Path = "runs/avatars",
    data_root: str | None = None,
    detector: Any = "auto",
    max_frames: int = 0,
    max_side: int = 0,
    synthetic_video_length: int = SYNTHETIC_VIDEO_LENGTH,
    preview_frames: int = 32,
    logger: Any = False,
    make_logger: Callable[[Path, str], Any] | None = None,
    progress_bar: bool = False,
    progress: Progress | None = None,
    overwrite: bool = False,
) -> AvatarResult:
    """An avatar of the person of ``source`` from T of its frames, saved as ``make finetune`` saves it.

    ``source``: a person/video id of the model's data (``syn0035/v00``, ``id90007``) or a video file / folder of
    images, or a list of photo files (landmarks detected with ``detector``: a backend name or a
    ``LandmarkDetector``; frames scaled down while decoding to ``max_side`` pixels a side, 0 = full size).  T frames are
    picked evenly; the rest (up to ``preview_frames``) are rendered for the preview.  Writes ``out`` (default
    ``out_dir/<source>_T<T>_<mode>/avatar.pt``) and beside it ``samples.png`` and ``preview.mp4``: these three
    files are checked before any work (``talkinghead.outputs``): none may be an input (the checkpoint, the video,
    a photo) and none may exist unless ``overwrite``.  ``logger``: Lightning logger(s) of fine-tuning, or
    ``make_logger(folder, name)`` makes one once the frames are found (nothing is written for a bad source).
    Stopped or failed half way, it removes what it wrote: the avatar's folder when it made it, else its files.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be FT (fine-tune) or FF (feed-forward, no fine-tuning), got {mode!r}")
    if int(T) < 1:
        raise ConfigError(f"T must be >= 1 (frames of the new person), got {T}")
    T = int(T)
    photos = [Path(p) for p in source] if isinstance(source, (list, tuple)) else None
    name = f"{slug(str(source if photos is None else _photos_name(photos)))}_T{T}_{mode}"
    out = Path(out) if out else Path(out_dir) / name / "avatar.pt"
    run_dir = out.parent
    ckpt_path = Path(meta.path) if meta is not None else resolve_checkpoint(None if ckpt is None else str(ckpt),
                                                                             runs_dir)
    grid_file, video_file = run_dir / "samples.png", run_dir / "preview.mp4"
    check_outputs([out, grid_file, video_file], {"checkpoint": ckpt_path, "source": photos or str(source)},
                  overwrite=overwrite, label="out=")
    _report(progress, 0.0, "loading the model")
    meta = meta if meta is not None else load_meta_learned(ckpt_path)
    settings = settings or settings_for(meta.config)  # the model's own recipe (experiments/finetuning/)
    made_folder = not run_dir.exists()
    before = {f: _mtime(f) for f in (out, grid_file, video_file)}
    try:
        return _make_avatar(
            meta, source if photos is None else photos, T=T, mode=mode, settings=settings, out=out, name=name,
            data_root=data_root, detector=detector, max_frames=max_frames, max_side=max_side,
            synthetic_video_length=synthetic_video_length, preview_frames=preview_frames, logger=logger,
            make_logger=make_logger, progress_bar=progress_bar, progress=progress,
        )
    except BaseException:  # stopped (Ctrl-C, SIGTERM) or failed: no half-made avatar is left
        if made_folder:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            for f, was in before.items():
                if _mtime(f) != was and f.is_file():
                    f.unlink()
        raise


def _mtime(path: Path) -> int | None:
    return path.stat().st_mtime_ns if path.is_file() else None


def _photos_name(photos: Sequence[Path]) -> str:
    return f"{len(photos)} photos" if len(photos) != 1 else str(photos[0])


def _make_avatar(
    meta: MetaLearned, source: str | Path | Sequence[Path], *, T: int, mode: str, settings: FineTuneSettings,
    out: Path, name: str, data_root: str | None, detector: Any, max_frames: int, max_side: int,
    synthetic_video_length: int, preview_frames: int, logger: Any, make_logger: Callable[[Path, str], Any] | None,
    progress_bar: bool, progress: Progress | None,
) -> AvatarResult:
    """:func:`make_avatar` once its outputs are checked and the model is loaded."""
    size = meta.image_size
    photos = [Path(p) for p in source] if isinstance(source, (list, tuple)) else None
    if photos is not None:
        source = f"{len(photos)} photos" if len(photos) != 1 else photos[0]
    _report(progress, 0.02, f"reading {source} and finding its landmarks")
    person = shots_mod.resolve(
        photos if photos is not None else str(source),
        meta.config.data,
        size,
        data_root=data_root,
        synthetic_video_length=synthetic_video_length,
        detector=detector if isinstance(detector, LandmarkDetector) else None,
        detector_backend=detector if isinstance(detector, str) else "auto",
        max_frames=max_frames,
        max_side=max_side,
    )
    notes = list(person.notes)
    person.require(T)
    positions = shots_mod.evenly(person.num_frames, T)
    shots = person.load(positions)
    run_dir = out.parent
    if make_logger is not None:
        logger = make_logger(run_dir, name)
    steps = settings.steps_for(T) if mode == "FT" else 0
    what = f"fine-tuning on T={T} frames for {settings.describe(T)}" if mode == "FT" else f"FF on T={T} frames"
    _report(progress, 0.05, what)

    def on_step(i: int, total: int) -> None:
        _report(progress, 0.05 + 0.85 * i / max(1, total), f"fine-tuning: step {i}/{total}")

    fitted = fit_avatar(
        meta,
        shots,
        mode=mode,
        settings=settings,
        person_id=person.person_id,
        source=str(source),
        logger=logger,
        progress=progress_bar,
        on_step=on_step if steps else None,
    )
    frame, box = person.source_frame(positions[0])  # what full-frame output pastes the face back into
    fitted.avatar.set_source_frame(frame, box, shots["landmarks"][0])
    _report(progress, 0.92, "rendering the preview")
    preview, unseen, grid_path, video_path = _preview(meta, person, shots, positions, fitted, mode, preview_frames,
                                                      run_dir, notes)
    save_avatar(fitted.avatar, out)  # last: an avatar file means a finished avatar
    caption = (
        "T sources (<=4) | target landmarks | "
        + ("FF | FT" if mode == "FT" else "FF")
        + (" | real (frames outside the T)" if unseen else " | real (frames of the T)")
    )
    _report(progress, 1.0, "avatar written")
    return AvatarResult(
        out, fitted.avatar, fitted, dict(shots), preview, unseen, grid_path, video_path, caption,
        person.num_frames, notes, logger,
    )


def _preview(meta: MetaLearned, person: Any, shots: dict, positions: list[int], fitted: Any, mode: str,
             frames: int, run_dir: Path, notes: list[str]) -> tuple[dict, bool, Path, Path]:
    """The avatar's preview: FF beside FT on ``frames`` frames outside the T (the T frames themselves when there
    are none: a note says so), as a grid (samples.png) and a clip (preview.mp4) in ``run_dir``.  -> (the frames
    by row name, whether they are unseen, the grid, the clip)"""
    rest = sorted(set(range(person.num_frames)) - set(positions))
    preview_pos = shots_mod.evenly(len(rest), int(frames)) if rest else []
    preview = dict(person.load([rest[i] for i in preview_pos])) if preview_pos else dict(shots)
    if not preview_pos:
        notes.append(f"all {person.num_frames} frames were used to make the avatar: the preview shows them")
    preview["fake"] = fitted.render(preview["landmark_images"])
    if mode == "FT":
        psi_ff = initial_psi(meta.generator, fitted.avatar.e_new)
        preview["ff"] = FrameRenderer(meta.generator, psi_ff).render(preview["landmark_images"][:8])
    rows = []
    for i in range(min(4, preview["fake"].shape[0])):
        row = list(shots["frames"][:4]) + [preview["landmark_images"][i]]
        row += ([preview["ff"][i]] if "ff" in preview else []) + [preview["fake"][i], preview["frames"][i]]
        rows.append(row)
    grid_path = save_png(make_grid(rows), run_dir / "samples.png")
    video_path = write_video(
        run_dir / "preview.mp4",
        side_by_side_frames(preview["frames"], preview["landmark_images"], preview["fake"]),
        fps=10,
    )
    return preview, bool(preview_pos), grid_path, video_path


# ------------------------------------------------------------------------------------------------ driving
@dataclass
class DriveResult:
    """What :func:`drive` wrote: ``path`` (mp4) with ``frames`` frames at ``video_fps``; ``fps``: frames per
    second reached by the render-and-encode loop; ``first_frame_s``: seconds from the call to the first frame
    rendered (loading and landmark detection included)."""

    path: Path
    frames: int
    video_fps: float
    fps: float
    seconds: float
    first_frame_s: float
    adapted: bool
    missing: int
    side_by_side: bool
    notes: list[str] = field(default_factory=list)
    full: bool = False  # the avatar's whole source frame with the face pasted back (``talkinghead.inference.paste``)
    backend: str = "torch"  # what rendered: torch or onnxruntime (``backend="auto"`` picks one)


@one_job
def drive(
    avatar: str | Path | Avatar,
    driver: str | Path,
    out: str | Path,
    options: DriveOptions | None = None,
    *,
    meta: MetaLearned | None = None,
    ckpt: str | Path | None = None,
    runs_dir: str | Path = "runs",
    detector: Any = "auto",
    data_root: str | None = None,
    progress: Progress | None = None,
    progress_bar: bool = False,
    overwrite: bool = False,
    **changes: Any,
) -> DriveResult:
    """Render ``avatar`` driven by the landmarks of ``driver`` into the mp4 ``out``.

    ``driver``: a video file / folder of images, or a person/video id of the avatar's data.  ``options``: how
    (:class:`~talkinghead.inference.reenact.DriveOptions`: adaptation, tracking, smoothing, layout, renderer, frames; the
    same for the CLI, the page and live driving), with ``changes`` to its fields (``api.drive(a, d, o,
    full=True)``).  ``meta``: the model, when already loaded (else the avatar's own checkpoint, or ``ckpt``).
    ``out`` may not be an input (driver, avatar, checkpoint, ONNX file) and may not exist unless ``overwrite``
    (``talkinghead.outputs``, checked before any work).  An avatar made before full-frame output is a one-line
    error with ``full``.
    """
    from tqdm.auto import tqdm

    start = time.perf_counter()
    o = DriveOptions.of(options, **changes)
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise ReenactError(f"OUT must be an .mp4 file, got {out}")
    check_outputs([out], {
        "driver": str(driver), "avatar": None if isinstance(avatar, Avatar) else avatar, "checkpoint": ckpt,
        "model's checkpoint": None if meta is None else meta.path, "ONNX file": o.onnx,
    }, overwrite=overwrite, label="OUT")
    _report(progress, 0.0, "loading the avatar and the model")
    av_ = avatar if isinstance(avatar, Avatar) else load_avatar(avatar)
    source = av_.source_frame(None if isinstance(avatar, Avatar) else avatar) if o.full else None

    notes: list[str] = []
    renderer = _drive_renderer(av_, avatar, o, meta, ckpt, runs_dir, notes)
    _report(progress, 0.05, f"reading the driver {driver} and finding its landmarks")
    drv = load_driver(str(driver), av_.data_config, av_.image_size, detector=detector, max_frames=o.max_frames,
                      synthetic_frames=o.synthetic_frames, data_root=data_root, landmarks=o.landmarks,
                      max_side=o.max_side, landmark_set=av_.landmark_set)
    n = len(drv.landmarks)
    if drv.missing:
        notes.append(f"driver: no face in {drv.missing} of {n} frames: held the last good landmarks there")
    if drv.person_id is None and (iris_note := absent_note(drv.landmarks, "the driver")):
        notes.append(iris_note)
    points, adapted = driver_points(drv, av_, o.adapt, o.reference, o.smooth)
    bar = tqdm(total=n, desc="reenact", unit="frame", disable=not progress_bar)
    done = [0]
    first: list[float] = []
    t0 = time.perf_counter()

    def on_frames(k: int) -> None:
        if not first:
            first.append(time.perf_counter() - start)
        done[0] += k
        bar.update(k)
        _report(progress, 0.3 + 0.7 * done[0] / n, f"rendering: frame {done[0]}/{n}")

    _report(progress, 0.3, f"rendering {n} frames")
    frames = render_frames(
        renderer, points, drv.frames if o.side_by_side else None, batch_size=o.batch_size, on_frames=on_frames
    )
    if source is not None:
        frames = paste_frames(frames, points, source, av_.crop_box, av_.source_landmarks.numpy())
    write_video(out, frames, fps=o.fps or drv.fps)
    bar.close()
    took = time.perf_counter() - t0
    return DriveResult(
        out, n, float(o.fps or drv.fps), n / max(took, 1e-9), time.perf_counter() - start,
        first[0] if first else 0.0, adapted, drv.missing, o.side_by_side, notes, o.full,
        renderer.backend,
    )


def _drive_renderer(av_: Avatar, avatar: Any, o: DriveOptions, meta: MetaLearned | None, ckpt: str | Path | None,
                    runs_dir: str | Path, notes: list[str]) -> AvatarFrames:
    """The avatar's renderer for ``o.backend`` (``talkinghead.inference.export.avatar_renderer``: torch's
    AvatarRenderer or onnxruntime); the model is loaded only for torch: ``meta``, else the avatar's own checkpoint
    (when ``ckpt`` names none), else ``ckpt`` or the newest of ``runs_dir``."""

    def model() -> MetaLearned:
        if meta is not None:
            return meta
        if ckpt is None and Path(av_.checkpoint).is_file():
            return load_meta_learned(av_.checkpoint)
        return load_model(ckpt, runs_dir)

    return avatar_renderer(
        av_, model, backend=o.backend, device=pick_device(o.device),
        speed=Speed() if o.speed == "fast" else Speed.plain(), avatar_path=None if isinstance(avatar, Avatar) else avatar,
        onnx_file=o.onnx, notes=notes, batch_size=o.batch_size,
    )


# ------------------------------------------------------------------------------------------------ export
def export_avatar(
    avatar: str | Path,
    out: str | Path | None = None,
    *,
    precision: str = "fp32",
    ckpt: str | Path | None = None,
    runs_dir: str | Path = "runs",
    overwrite: bool = False,
    meta: MetaLearned | None = None,
) -> Any:
    """``avatar`` as one ONNX file (default ``avatar.onnx`` beside it): ``talkinghead.inference.export.export_avatar``;
    returns its ``ExportResult``.  ``out`` may not be an input and may not exist unless ``overwrite``
    (``talkinghead.outputs``).  ``meta``: the model, when already loaded.  Needs ``pip install -e '.[export]'``
    (onnx, onnxscript, onnxruntime)."""
    out = Path(out) if out else default_out(avatar)
    if out.suffix.lower() == ".onnx":  # (export's own one-line error names any other suffix)
        inputs = {"avatar": avatar, "checkpoint": ckpt, "model's checkpoint": None if meta is None else meta.path}
        check_outputs([out], inputs, overwrite=overwrite, label="OUT")
    return export(avatar, out, precision=precision, ckpt=ckpt, runs_dir=runs_dir,
                  overwrite=overwrite, meta=meta)


# ------------------------------------------------------------------------------------------------ runs
_ITER = re.compile(r"iter_(\d+)\.png$")


@dataclass
class RunInfo:
    """One meta-learning run folder: ``samples`` [(iteration, png)], ``metrics_csv`` (CSV logger files),
    ``checkpoint`` (last.ckpt or None)."""

    name: str
    path: Path
    samples: list[tuple[int, Path]]
    metrics_csv: list[Path]
    checkpoint: Path | None

    @property
    def iterations(self) -> int | None:
        return self.samples[-1][0] if self.samples else None


@dataclass
class EvaluationInfo:
    """One ``make evaluate`` output folder: its markdown table and example frames."""

    name: str
    path: Path
    table: str
    rows: list[dict[str, str]]
    examples: Path | None


def list_runs(runs_dir: str | Path = "runs") -> list[RunInfo]:
    """The meta-learning runs under ``runs_dir`` (folders with ``checkpoints/`` or ``samples/``), newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    runs = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        if not ((d / "checkpoints").is_dir() or (d / "samples").is_dir()):
            continue
        samples = sorted(
            (int(m.group(1)), p) for p in (d / "samples").glob("iter_*.png") if (m := _ITER.search(p.name))
        )
        ckpt = d / "checkpoints" / "last.ckpt"
        runs.append(RunInfo(d.name, d, samples, sorted(d.glob("**/metrics.csv")), ckpt if ckpt.is_file() else None))
    return sorted(runs, key=lambda r: max((p.stat().st_mtime for p in [r.path, *r.metrics_csv]), default=0), reverse=True)


def loss_curves(run: RunInfo, keys: Sequence[str] | None = None) -> dict[str, list[tuple[int, float]]]:
    """{metric: [(step, value)]} from the run's CSV logger files (``logger=csv``); ``keys`` None = all
    columns except step/epoch."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for path in run.metrics_csv:
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                step = row.get("step")
                if not step:
                    continue
                for k, v in row.items():
                    if k in ("step", "epoch") or not v or (keys is not None and k not in keys):
                        continue
                    try:
                        curves.setdefault(k, []).append((int(float(step)), float(v)))
                    except ValueError:
                        continue
    return {k: sorted(v) for k, v in sorted(curves.items())}


def list_evaluations(out_dir: str | Path = "runs/evaluate") -> list[EvaluationInfo]:
    """The ``make evaluate`` outputs under ``out_dir`` (folders with ``table.md``), newest first."""
    root = Path(out_dir)
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        table = d / "table.md"
        if d.is_symlink() or not table.is_file():
            continue
        rows: list[dict[str, str]] = []
        if (d / "table.csv").is_file():
            with open(d / "table.csv", newline="") as f:
                rows = list(csv.DictReader(f))
        ex = d / "examples.png"
        found.append(EvaluationInfo(d.name, d, table.read_text(), rows, ex if ex.is_file() else None))
    return sorted(found, key=lambda e: e.path.stat().st_mtime, reverse=True)


def list_avatars(out_dir: str | Path = "runs/avatars") -> list[Path]:
    """The avatar files ``out_dir/<name>/avatar.pt`` (as ``make finetune`` writes them), newest first."""
    root = Path(out_dir)
    if not root.is_dir():
        return []
    files = [p for p in root.glob("*/avatar.pt") if p.is_file() and not p.is_symlink() and not p.parent.is_symlink()]
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


def print_progress(stream: Any = sys.stderr) -> Progress:
    """A ``progress`` callback that prints each new message once (for scripts)."""
    last: list[str] = [""]

    def report(fraction: float, message: str) -> None:
        key = message.split(":")[0]
        if key != last[0]:
            last[0] = key
            print(message, file=stream)

    return report


def frames_of(video: str | Path) -> tuple[int, float]:
    """(frame count, fps) of a video file, from its header (its packets counted when the header has none)."""
    info = probe_video(video)
    return info.frames, info.fps


def probe_video(video: str | Path) -> Any:
    """``talkinghead.inference.shots.VideoInfo`` (frames, fps, width, height) of a video file, nothing decoded."""
    return probe(Path(video))


__all__ = [
    "AvatarResult", "DriveOptions", "DriveResult", "EvaluationInfo", "Progress", "RunInfo", "drive", "export_avatar", "frames_of",
    "held_out_ids", "list_avatars", "list_evaluations", "list_runs", "load_model", "loss_curves", "make_avatar",
    "print_progress", "probe_video", "slug",
]
