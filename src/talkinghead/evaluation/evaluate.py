"""``talkinghead evaluate``: the paper's Table 1 protocol on the held-out videos of a meta-learned model.

For every T in ``T_values`` and every held-out video (the synthetic test identities' videos, or the videos of the
test persons of a shard folder: with ``data.unit=video`` a VoxCeleb video is ``person/youtube id``, all its
utterances end to end in id order): pick T source frames spread over the first half of the video's frames, make an
avatar with and without fine-tuning (FT / FF), render ``num_targets`` frames spread over the second half (disjoint
from the sources, the same for every T) from their landmarks, and score them against the real frames with FID,
SSIM and CSIM (``talkinghead.metrics``). The paper takes the T frames and the hold-out frames from the same video.
Prints a markdown table beside the paper's FIDs, writes it and a CSV atomically, saves example frames, and logs a
W&B table when that logger is on.
"""

from __future__ import annotations

import csv
import io
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm.auto import tqdm

from data_modules.shards import UNITS
from talkinghead.inference import shots as shots_mod
from talkinghead.inference.avatar import MetaLearned, load_meta_learned, resolve_checkpoint
from talkinghead.config import compose
from talkinghead.evaluation.crossid import (
    EyeTally,
    adapt_modes,
    cross_csv,
    cross_detector,
    cross_markdown,
    eye_reference,
    run_cross,
    score_clip,
)
from talkinghead.errors import ConfigError, EvaluationError
from talkinghead.inference.fewshot import FineTuneSettings, fit_avatar, recipe_overrides
from talkinghead.files import atomic_write_text
from talkinghead.training.loggers import make_logger, wandb_loggers
from talkinghead.metrics import MetricsSuite
from talkinghead.sessions import free_name
from talkinghead.inference.shots import data_source
from talkinghead.stops import Interrupted, as_interrupted
from talkinghead.visualize import make_grid, save_png, to_uint8

#: The paper's FIDs (Zakharov et al. 2019, Table 1): "Ours" on VoxCeleb1 (fine-tuned), Ours-FT on VoxCeleb2.
PAPER_FID = {
    ("VoxCeleb1", "FT"): {1: 43.0, 8: 38.0, 32: 29.5},
    ("VoxCeleb2", "FT"): {1: 48.5, 8: 42.2, 32: 30.6},
}
COLUMNS = ("T", "method", "videos", "frames", "FID", "SSIM", "CSIM", "seconds", "gaze_error", "iris_missing",
           "blink_r", "blinks", "blinks_missed")
#: ``protocols``: the paper's Table 1, and reenactment across people (``talkinghead.evaluation.crossid``)
PROTOCOLS = ("table1", "cross")


@dataclass
class Row:
    T: int
    method: str
    videos: int = 0
    frames: int = 0
    values: dict[str, float | None] = field(default_factory=dict)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    #: the eye scores of its outputs against the target frames (``eyes: true``)
    eyes: EyeTally | None = None

    def fmt(self, name: str, digits: int) -> str:
        v = self.values.get(name.lower())
        return "unavailable" if v is None else f"{v:.{digits}f}"


def set_unit(meta_cfg: DictConfig, unit: str) -> None:
    """Evaluate a VoxCeleb model's held-out persons by ``unit`` (``video``: person/youtube id, its utterances pooled;
    ``utterance``: every clip alone) instead of its own ``data.unit``. The W table is not used by the protocol, so
    any unit applies to any checkpoint; data without units (the synthetic population) refuses the option."""
    if unit not in UNITS:
        raise ConfigError(f"unit must be one of {list(UNITS)} or null, got {unit!r}")
    if "unit" not in meta_cfg.data:
        raise ConfigError(f"unit={unit}: the model's data ({meta_cfg.data.get('_target_', '?')}) has no units; "
                          "leave unit=null")
    with open_dict(meta_cfg):
        meta_cfg.data.unit = unit


def held_out_videos(meta_cfg: DictConfig, data_root: str | None) -> list[str]:
    """Video ids of the persons the model never saw in meta-learning (VoxCeleb: the units of its ``data.unit``,
    so with ``video`` every YouTube video of a test person, its utterances pooled)."""
    return data_source(meta_cfg.data, int(meta_cfg.model.image_size), data_root).held_out_video_ids()


def paper_cell(T: int, method: str, dataset: str) -> str:
    fid = PAPER_FID.get((dataset, method), {}).get(T)
    return "—" if fid is None else f"{fid:.1f}"


def markdown_table(rows: Sequence[Row], notes: Sequence[str] = ()) -> str:
    lines = [
        "| T | method | videos | FID ↓ | SSIM ↑ | CSIM ↑ | paper FID, VoxCeleb1 | paper FID, VoxCeleb2 "
        "| gaze error ↓ | blink r ↑ | blinks missed |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        eyes = f"{r.eyes.blinks_missed}/{r.eyes.blinks}" if r.eyes is not None else "unavailable"
        lines.append(
            f"| {r.T} | {r.method} | {r.videos} | {r.fmt('FID', 1)} | {r.fmt('SSIM', 3)} | {r.fmt('CSIM', 3)} "
            f"| {paper_cell(r.T, r.method, 'VoxCeleb1')} | {paper_cell(r.T, r.method, 'VoxCeleb2')} "
            f"| {r.fmt('gaze_error', 3)} | {r.fmt('blink_r', 2)} | {eyes} |"
        )
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def csv_text(rows: Sequence[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    for r in rows:
        w.writerow(
            [
                r.T,
                r.method,
                r.videos,
                r.frames,
                *("" if r.values.get(k) is None else f"{r.values[k]:.6f}" for k in ("fid", "ssim", "csim")),
                f"{r.seconds:.1f}",
                *("" if r.values.get(k) is None else f"{r.values[k]:.6f}"
                  for k in ("gaze_error", "iris_missing", "blink_r")),
                *((r.eyes.blinks, r.eyes.blinks_missed) if r.eyes is not None else ("", "")),
            ]
        )
    return buf.getvalue()


def load_ff_model(ff_ckpt: str | None, meta: MetaLearned) -> tuple[MetaLearned, str]:
    """The model of the FF rows and the table note that says what it is.

    The paper's FF model is meta-learned apart, without the match term (``experiment=vox2_paper_ff``).  Without
    ``ff_ckpt`` the FF rows use ``meta`` with no fine-tuning, and the note says so; an ``ff_ckpt`` meta-learned
    with the match term is used and reported as such; one of another model than ``meta`` is an error.
    """
    if ff_ckpt in (None, "", "null", "None"):
        return meta, (
            f"FF rows: the FT model ({meta.path}) with no fine-tuning (psi' = P e_new), NOT the paper's FF model, "
            "which is meta-learned apart without the match term (experiment=vox2_paper_ff); give ff_ckpt= for it"
        )
    ff = load_meta_learned(resolve_checkpoint(ff_ckpt))
    mine = OmegaConf.to_container(meta.config.model, resolve=True)
    theirs = OmegaConf.to_container(ff.config.model, resolve=True)
    if mine != theirs:
        raise EvaluationError(
            f"ff_ckpt {ff.path} is a model with image_size={theirs.get('image_size')}, emb_dim="
            f"{theirs.get('emb_dim')} and the FT checkpoint {meta.path} one with image_size={mine.get('image_size')}, "
            f"emb_dim={mine.get('emb_dim')}: give an FF model of the same size (was it saved by another model size?)"
        )
    weight = float((ff.config.get("loss") or {}).get("weights", {}).get("match", 0.0) or 0.0)
    if weight:
        return ff, (
            f"FF rows: {ff.path}, meta-learned WITH the match term (loss.weights.match={weight:g}), unlike the "
            "paper's FF model (experiment=vox2_paper_ff has none)"
        )
    return ff, f"FF rows: {ff.path}, a separate model meta-learned without the match term (the paper's FF)"


def compose_evaluate(overrides: Sequence[str]) -> DictConfig:
    cfg = compose("evaluate", overrides)
    Ts = [int(t) for t in cfg.T_values]
    if not Ts or min(Ts) < 1:
        raise ConfigError(
            f"T_values must be a non-empty list of positive frame counts, got {list(cfg.T_values)}"
        )
    bad = sorted(set(cfg.methods) - {"FT", "FF"})
    if bad or not cfg.methods:
        raise ConfigError(f"methods must be a non-empty subset of [FT, FF], got {list(cfg.methods)}")
    if int(cfg.num_targets) < 1:
        raise ConfigError(f"num_targets must be >= 1, got {cfg.num_targets}")
    if cfg.get("unit") is not None and str(cfg.unit) not in UNITS:
        raise ConfigError(f"unit must be one of {list(UNITS)} or null, got {cfg.unit!r}")
    protocols = [str(p) for p in (cfg.get("protocols") or ["table1"])]
    if not protocols or set(protocols) - set(PROTOCOLS):
        raise ConfigError(f"protocols must be a non-empty subset of {list(PROTOCOLS)}, got {protocols}")
    if "cross" in protocols:
        adapt_modes(cfg.cross.adapt)
    return cfg


@dataclass
class Evaluation:
    """What a ``make evaluate`` run works with, once its config is read and checked (:func:`prepare`): the models,
    the fine-tuning settings, the held-out videos and the folder its tables go to."""

    cfg: DictConfig
    Ts: list[int]
    methods: list[str]
    protocols: list[str]
    suites: dict[tuple[int, str], MetricsSuite]
    detector: Any
    ckpt: Path
    meta: MetaLearned
    ff_meta: MetaLearned
    ff_note: str
    settings: FineTuneSettings
    videos: list[str]
    length: int
    out_dir: Path

    @property
    def eyes(self) -> bool:
        return bool(self.cfg.get("eyes", True))


@dataclass
class Table1:
    """Table 1's scores as the loop over videos leaves them: a row per (T, method), the first video's outputs and
    sources for the example grid, its real frames, and the videos each T skipped."""

    rows: dict[tuple[int, str], Row]
    examples: dict[tuple[int, str], list[torch.Tensor]] = field(default_factory=dict)
    example_src: dict[int, torch.Tensor] = field(default_factory=dict)
    first_real: dict[str, torch.Tensor] | None = None
    skipped: dict[int, list[str]] = field(default_factory=dict)


def evaluate_main(overrides: Sequence[str], detector: Any = None) -> Path:
    """Run the protocol(s); returns the CSV's path (the markdown table sits beside it as ``table.md``; the
    cross-identity protocol writes ``cross.csv`` / ``cross.md`` there, and its CSV is returned when it runs
    alone).  ``detector``: a ``LandmarkDetector`` for the outputs' landmarks (the cross-identity protocol and the
    eye scores; else ``cross.detector``)."""
    ev = prepare(overrides, detector)
    try:
        if "table1" not in ev.protocols:
            return cross_protocol(ev.cfg, ev.meta, ev.settings, ev.videos, ev.out_dir, ev.detector)
        logger = make_logger(ev.cfg.get("logger"), ev.out_dir, f"evaluate-{ev.ckpt.parent.parent.name}")
        csv_path = write_table1(ev, run_table1(ev), logger)
        if "cross" in ev.protocols:
            cross_protocol(ev.cfg, ev.meta, ev.settings, ev.videos, ev.out_dir, ev.detector)
        return csv_path
    except BaseException as exc:  # Ctrl-C / SIGTERM: say what is kept (talkinghead.stops)
        stop = as_interrupted(exc)
        if stop is None:
            raise
        out_dir = ev.out_dir
        if not any((out_dir / f).is_file() for f in ("table.csv", "cross.csv")):
            shutil.rmtree(out_dir, ignore_errors=True)
            raise Interrupted(stop.signum, f"no table written; its unfinished folder {out_dir} was removed") from None
        raise Interrupted(stop.signum, f"{out_dir} keeps the tables written before the stop") from None


def prepare(overrides: Sequence[str], detector: Any = None) -> Evaluation:
    """Read and check the config, build the metrics and the detector, load the models and pick the videos, so that
    whatever cannot run fails before any work; then make the run's new output folder."""
    cfg = compose_evaluate(overrides)
    Ts = sorted({int(t) for t in cfg.T_values})
    methods = [str(m) for m in cfg.methods]
    metrics_cfg = OmegaConf.to_container(cfg.metrics, resolve=True) if cfg.get("metrics") else {}
    try:  # a missing weight file that was asked for fails before any work is done
        suites = {(T, m): MetricsSuite(metrics_cfg, sync_on_compute=False) for T in Ts for m in methods}
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise EvaluationError(f"metrics: {str(exc).splitlines()[0]}") from exc
    protocols = [str(p) for p in (cfg.get("protocols") or ["table1"])]
    if ("cross" in protocols or bool(cfg.get("eyes", True))) and detector is None:
        detector = cross_detector(str(cfg.cross.detector))  # a detector that cannot run fails before any work
    ckpt = resolve_checkpoint(cfg.ckpt, cfg.runs_dir)
    meta = load_meta_learned(ckpt)
    # the model's fine-tuning recipe (finetuning_recipe), another one or single keys where the line asks
    recipe, with_recipe = recipe_overrides(meta.config, list(overrides), group="finetuning@finetune")
    settings = FineTuneSettings.from_config(compose_evaluate(with_recipe).finetune, speed=cfg.get("speed"),
                                            recipe_name=recipe)
    if cfg.get("unit"):
        set_unit(meta.config, str(cfg.unit))
    ff_meta, ff_note = load_ff_model(cfg.get("ff_ckpt"), meta) if "FF" in methods else (meta, "")
    videos = held_out_videos(meta.config, cfg.get("data_root"))
    if cfg.get("videos"):
        videos = [str(v) for v in cfg.videos]
    elif cfg.get("max_videos"):
        videos = videos[: int(cfg.max_videos)]
    if not videos:
        raise EvaluationError("the model's data has no held-out video (test persons): nothing to evaluate on")
    # T sources from the first half and num_targets from the second: a fixed length, so the frames scored
    # for one T do not depend on which other T values were asked for
    length = int(cfg.synthetic_video_length)
    if "table1" in protocols and length < 2 * max(max(Ts), int(cfg.num_targets)):
        raise EvaluationError(
            f"synthetic_video_length={length} is too short for T up to {max(Ts)} and {int(cfg.num_targets)} targets: "
            f"set synthetic_video_length >= {2 * max(max(Ts), int(cfg.num_targets))}")
    name = f"{Path(ckpt).parent.parent.name}_{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir = Path(cfg.out_dir) / free_name(Path(cfg.out_dir), name)  # a new folder: no earlier table replaced
    out_dir.mkdir(parents=True)
    return Evaluation(cfg, Ts, methods, protocols, suites, detector, Path(ckpt), meta, ff_meta, ff_note, settings,
                      videos, length, out_dir)


def run_table1(ev: Evaluation) -> Table1:
    """Table 1's loop: per held-out video, the targets from its second half; per T, the sources from its first half;
    per method, an avatar whose renders of the targets' landmarks are scored (metrics, and eyes where asked)."""
    cfg, size = ev.cfg, ev.meta.image_size
    result = Table1({(T, m): Row(T, m, eyes=EyeTally() if ev.eyes else None) for T in ev.Ts for m in ev.methods})
    bar = tqdm(total=len(ev.videos) * len(ev.Ts) * len(ev.methods), desc="evaluate", unit="avatar",
               disable=not cfg.progress)
    for vi, video in enumerate(ev.videos):
        person = shots_mod.resolve(video, ev.meta.config.data, size, data_root=cfg.get("data_root"),
                                   synthetic_video_length=ev.length)
        half = person.num_frames // 2
        targets = person.load(shots_mod.evenly(person.num_frames - half, int(cfg.num_targets), offset=half))
        target_lms = targets["landmarks"].numpy()
        reference = eye_reference(to_uint8(targets["frames"]), target_lms) if ev.eyes else None
        if result.first_real is None:
            result.first_real = targets
        for T in ev.Ts:
            if T > half:
                result.skipped.setdefault(T, []).append(video)
                bar.update(len(ev.methods))
                continue
            shots = person.load(shots_mod.evenly(half, T))
            for m in ev.methods:
                avatar = fit_avatar(ev.ff_meta if m == "FF" else ev.meta, shots, mode=m, settings=ev.settings,
                                    person_id=person.person_id, source=video)
                fake = avatar.render(targets["landmark_images"])
                ev.suites[(T, m)].update(fake, targets["frames"])
                row = result.rows[(T, m)]
                row.videos += 1
                row.frames += fake.shape[0]
                row.seconds += avatar.seconds
                if row.eyes is not None:
                    row.eyes.add(score_clip(to_uint8(fake), target_lms, ev.detector, reference,
                                            fit=bool(cfg.cross.get("fit", True))))
                if vi == 0:
                    result.examples[(T, m)] = list(fake[:2])
                    result.example_src[T] = shots["frames"][:3]
                bar.update(1)
    bar.close()
    return result


def table1_notes(ev: Evaluation, result: Table1) -> list[str]:
    """The rows' metric values filled in from the suites, and the notes under the table: skipped T values, metrics
    that could not run, CSIM's fallbacks."""
    notes = [f"T={T} skipped on {len(vids)} video(s) with fewer than {2 * T} frames (e.g. {vids[0]}): the T sources "
             f"come from the first half (preprocess with --frames-per-video >= {2 * T})"
             for T, vids in result.skipped.items()]
    for key, suite in ev.suites.items():
        row = result.rows[key]
        if row.videos:
            row.values = suite.compute()
            if row.eyes is not None:
                row.values.update(row.eyes.values())
            notes += [f"{name.upper()} unavailable: {why}" for name, why in suite.reasons().items()]
    fell = seen = 0
    for suite in ev.suites.values():
        if "csim" in suite.metrics:
            f, n = suite.metrics["csim"].fallbacks
            fell, seen = fell + f, seen + n
    if fell:
        notes.append(f"CSIM: the face encoder found no face in {fell} of {seen} frames and used the crop centre")
    return list(dict.fromkeys(notes))


def table1_footer(ev: Evaluation) -> list[str]:
    """What the table was measured on: checkpoint, videos, frames, fine-tuning, FF model, CSIM encoder, eye scores."""
    cfg, settings = ev.cfg, ev.settings
    ft = (f"{settings.epochs:g} epochs over the T frames" if settings.epochs is not None else
          f"{'at most ' if settings.early_stop_window else ''}{settings.steps} steps") + f", recipe {settings.recipe}"
    footer = [
        f"checkpoint: {ev.ckpt}; {len(ev.videos)} held-out videos"
        f"{f' (unit={cfg.unit})' if cfg.get('unit') else ''}; {int(cfg.num_targets)} target frames each "
        f"(second half of the video's frames, all its utterances), T sources from the first half; FT: {ft}"
    ]
    footer += [ev.ff_note] if ev.ff_note else []
    footer += next(([f"CSIM encoder: {s.csim_encoder}"] for s in ev.suites.values() if s.csim_encoder), [])
    if ev.eyes:
        footer.append(
            "eyes (eyes=true): gaze error = the output's irises against the target frame's, eye-normalised (eye "
            "widths), both located by talkinghead.landmarks.iris on the 68 points found by "
            f"{getattr(ev.detector, 'name', type(ev.detector).__name__)}; blink r = correlation over time of the eye "
            "openings (talkinghead.evaluation.crossid, docs/stages.md)")
    return footer


def write_table1(ev: Evaluation, result: Table1, logger: Any) -> Path:
    """``table.csv``, ``table.md`` and ``examples.png`` in the run's folder, the W&B table and images, the printout;
    returns the CSV's path."""
    notes = table1_notes(ev, result)
    done = [result.rows[(T, m)] for T in ev.Ts for m in ev.methods if result.rows[(T, m)].videos]
    if not done:
        raise EvaluationError(f"no held-out video has enough frames for T in {ev.Ts}: " + "; ".join(notes[:3]))
    table = markdown_table(done, table1_footer(ev) + notes)
    csv_path = atomic_write_text(ev.out_dir / "table.csv", csv_text(done))
    atomic_write_text(ev.out_dir / "table.md", table + "\n")
    methods, grid_rows = ev.methods, []
    for T in ev.Ts:
        if (T, methods[0]) not in result.examples:
            continue
        for i in range(len(result.examples[(T, methods[0])])):
            row = list(result.example_src[T]) + [result.first_real["landmark_images"][i]]
            row += [result.examples[(T, m)][i] for m in methods] + [result.first_real["frames"][i]]
            grid_rows.append(row)
    grid_path = save_png(make_grid(grid_rows), ev.out_dir / "examples.png") if grid_rows else None
    for lg in wandb_loggers(logger):
        log_table1_to_wandb(lg, done, result.examples, grid_path, methods)
    print(table)
    shown = f"\nexamples: {grid_path} (per T: sources | landmarks | {' | '.join(methods)} | real)" if grid_path else ""
    print(f"\nCSV: {csv_path}\nmarkdown: {ev.out_dir / 'table.md'}" + shown, file=sys.stdout)
    return csv_path


def log_table1_to_wandb(lg: Any, done: Sequence[Row], examples: dict[tuple[int, str], list[torch.Tensor]],
                        grid_path: Path | None, methods: Sequence[str]) -> None:
    """The rows as a W&B table (the CSV's columns and an example per row) and the example grid, then finish."""
    import wandb  # present whenever a W&B logger is

    table_w = wandb.Table(columns=[*COLUMNS, "example"])
    for r in done:
        ex = [wandb.Image(make_grid([[*examples[(r.T, r.method)]]]))] if (r.T, r.method) in examples else [None]
        table_w.add_data(
            r.T, r.method, r.videos, r.frames, r.values.get("fid"), r.values.get("ssim"), r.values.get("csim"),
            r.seconds, *(r.values.get(k) for k in ("gaze_error", "iris_missing", "blink_r")),
            *((r.eyes.blinks, r.eyes.blinks_missed) if r.eyes is not None else (None, None)), *ex,
        )
    lg.experiment.log({"evaluate/table": table_w})
    if grid_path is not None:
        lg.log_image(key="evaluate/examples", images=[str(grid_path)],
                     caption=[f"per T: sources (<=3) | target landmarks | {' | '.join(methods)} | real"])
    lg.experiment.finish()


def cross_protocol(
    cfg: DictConfig, meta: MetaLearned, settings: FineTuneSettings, videos: Sequence[str], out_dir: Path,
    detector: Any = None,
) -> Path:
    """The cross-identity protocol (``talkinghead.evaluation.crossid``): writes ``cross.csv`` and ``cross.md`` in ``out_dir``,
    prints the table; returns the CSV's path."""
    metrics_cfg = OmegaConf.to_container(cfg.metrics, resolve=True) if cfg.get("metrics") else {}
    rows, notes = run_cross(
        meta, OmegaConf.to_container(cfg.cross, resolve=True), settings, videos, metrics_cfg=metrics_cfg,
        data_root=cfg.get("data_root"), length=int(cfg.synthetic_video_length), detector=detector,
        progress=bool(cfg.progress), eyes=bool(cfg.get("eyes", True)),
    )
    table = cross_markdown(rows, [f"checkpoint: {meta.path}", *notes])
    csv_path = atomic_write_text(out_dir / "cross.csv", cross_csv(rows))
    atomic_write_text(out_dir / "cross.md", table + "\n")
    print("\nCross-identity reenactment\n\n" + table)
    print(f"\nCSV: {csv_path}\nmarkdown: {out_dir / 'cross.md'}")
    return csv_path
