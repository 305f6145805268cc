"""``talkinghead meta-learn``: the meta-learning stage. Build everything from the composed config (through
:mod:`talkinghead.training.build`), check it, then train.

Everything that can be wrong with the input (config, data, weights, K) fails here, before training starts.
"""
from __future__ import annotations

import importlib.util
import pickle
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from data_modules.batch import BatchSplit, split_batch
from talkinghead.training.build import USER_ERRORS, build, build_module, make_trainer, resolve_speed, world_size
from talkinghead.callbacks.preemption import GracefulStop, save_resumable
from talkinghead.callbacks.progress import IterationProgressBar
from talkinghead.callbacks.resume_hint import ResumeHint
from talkinghead.callbacks.samples import SampleGridCallback
from talkinghead.errors import ConfigError, TalkingHeadError
from talkinghead.training.loggers import is_global_rank_zero, make_logger
from talkinghead.losses.terms import term_weights
from talkinghead.modules.meta_learning import MetaLearningModule
from talkinghead.nets.discriminator import num_videos_in_state
from talkinghead.safe_load import UnsafeFileError, allowed_globals, refused, safe_load
from talkinghead.speed import Speed


@dataclass
class MetaLearningRun:
    """What ``build_meta_learning`` makes; ``fit()`` trains it."""

    cfg: DictConfig
    datamodule: pl.LightningDataModule
    module: MetaLearningModule
    trainer: pl.Trainer
    run_dir: Path
    ckpt_path: Path | None
    samples: SampleGridCallback | None  # the sample-grid callback, when callbacks.build has one
    speed: Speed
    batch: BatchSplit

    def fit(self) -> None:
        try:
            with allowed_globals():  # resuming reads the checkpoint as safe_load does: nothing in it runs
                self.trainer.fit(self.module, datamodule=self.datamodule, ckpt_path=self.ckpt_path, weights_only=True)
        except pickle.UnpicklingError as exc:  # the restricted unpickler refused the checkpoint resumed from
            if self.ckpt_path is None:
                raise
            raise refused(self.ckpt_path, exc) from exc
        save_resumable(self.trainer, self.run_dir / "checkpoints" / "last.ckpt")


# Lightning warns that a manual-optimisation checkpoint holds the state after the optimiser step: that is
# the state we want (the whole iteration is done when on_train_batch_end saves it).
warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
# The module's on_after_batch_transfer (channels-last batches) is meant to run with any DataModule.
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule`")
# A small dataset (voxmini's 10 training videos at batch 8) makes a one-batch epoch; logging counts global steps,
# so nothing is lost. The streams split their videos per worker themselves (VoxCelebStream.assignment), so
# their __len__ is exact at any num_workers. LeafSpec is Lightning's own deprecation, not ours to fix.
warnings.filterwarnings("ignore", message=r"The number of training batches .* is smaller than the logging interval")
warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")
warnings.filterwarnings("ignore", message=r".*LeafSpec.*")


def check_resumable(ckpt: Path, cfg: DictConfig, num_videos: int) -> None:
    """A checkpoint can be resumed only with the same model and the same W table size."""
    try:
        # memory-mapped: only the config and W are read here; Lightning loads the whole file once, later
        saved = safe_load(ckpt, "checkpoint", mmap=True)
    except UnsafeFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - a truncated file, say
        raise ConfigError(f"cannot read {ckpt} to resume ({type(exc).__name__}): use resume=false to start "
                          "afresh (the old checkpoints are kept)") from exc
    old_model = saved.get("hyper_parameters", {}).get("config", {}).get("model")
    new_model = OmegaConf.to_container(cfg.model, resolve=True)
    fix = f"use resume=false (keeps the old checkpoints) or another name= (this run dir: {cfg.run_dir})"

    try:
        rows = num_videos_in_state(saved.get("state_dict", {}))
    except ValueError as exc:
        raise ConfigError(f"{ckpt}: {exc} ({fix})") from exc
    if old_model is not None and old_model != new_model:
        def leaves(d: Any, prefix: str = "model") -> dict[str, Any]:
            if not isinstance(d, dict):
                return {prefix: d}
            return {k: v for key, val in d.items() for k, v in leaves(val, f"{prefix}.{key}").items()}

        old, new = leaves(old_model), leaves(new_model)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        shown = ", ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in diff[:3]) + (" ..." if len(diff) > 3 else "")
        raise ConfigError(f"{ckpt} was made with another model ({shown}): {fix}")
    if rows is not None and rows != num_videos:
        old_unit = data_unit(saved.get("hyper_parameters", {}).get("config", {}).get("data") or {})
        new_unit = data_unit(cfg.get("data") or {})
        if old_unit and new_unit and old_unit != new_unit:
            raise ConfigError(
                f"{ckpt} has a W table made per {old_unit} ({rows} rows) but data.unit={new_unit} gives {num_videos}: "
                f"use resume=false to start afresh (keeps the old checkpoints), or data.unit={old_unit} to go on "
                "with it")
        raise ConfigError(f"{ckpt} has a W table of {rows} videos but the data has {num_videos}: {fix}")


def data_unit(data_cfg: Any) -> str | None:
    """What one W row is in a data config: ``video`` or ``utterance`` for the VoxCeleb DataModules (configs saved
    before ``data.unit`` existed made one row per utterance), None for other data."""
    if "VoxCeleb" not in str(data_cfg.get("_target_", "")):
        return None
    return str(data_cfg.get("unit") or "utterance")


def check_config(cfg: DictConfig) -> None:
    epochs = cfg.get("epochs")
    for key in ("K", "seed") + (("iterations",) if epochs is None else ()):
        if not isinstance(cfg[key], int) or isinstance(cfg[key], bool):
            raise ConfigError(f"{key} must be a whole number, got {cfg[key]!r}")
    if int(cfg.K) < 1:
        raise ConfigError(f"K must be >= 1 (source frames per episode), got {cfg.K}")
    if epochs is None and int(cfg.iterations) < 1:
        raise ConfigError(f"iterations must be >= 1, got {cfg.iterations}")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or epochs <= 0):
        raise ConfigError(f"epochs must be a number > 0 (or null to count iterations), got {epochs!r}")
    term_weights(cfg.loss.weights)


def resolve_iterations(cfg: DictConfig, datamodule: pl.LightningDataModule, world: int = 1) -> int:
    """Generator updates to run: ``epochs`` passes over the training data when set (the paper counts epochs; one
    epoch is one step per global batch of training samples, i.e. every training video once with
    ``samples_per_video: 1``), else ``iterations``.  ``datamodule``'s loader is read before the Trainer exists, on
    one process: its batches of the per-device batch, over ``world`` devices."""
    import math

    if cfg.get("epochs") is None:
        return int(cfg.iterations)
    batches = len(datamodule.train_dataloader())
    return max(1, math.ceil(float(cfg.epochs) * batches / world))


def build_meta_learning(cfg: DictConfig, extra_callbacks: list[pl.Callback] | None = None) -> MetaLearningRun:
    """Instantiate data, networks, losses, loggers, callbacks and the Trainer; no training yet."""
    check_config(cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    run_dir = Path(cfg.run_dir)

    world = world_size(cfg.trainer)
    batch = split_batch(cfg.data.get("global_batch_size"), cfg.data.get("batch_size"), world)
    datamodule = build(cfg.data, batch_size=batch.per_device)
    datamodule.prepare_data()
    datamodule.setup("fit")
    speed = resolve_speed(cfg)
    module = build_module(cfg, datamodule.num_videos, speed)
    d_steps = int(cfg.optim.d_steps_per_g)

    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    ckpt_path = None
    if last.exists():
        if cfg.resume:
            check_resumable(last, cfg, datamodule.num_videos)
            ckpt_path = last
        elif is_global_rank_zero():  # start afresh without losing the old run (nor continuing its W&B run)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            shutil.move(str(ckpt_dir), str(run_dir / f"checkpoints.{stamp}"))
            if (run_dir / "wandb_id.txt").exists():
                (run_dir / "wandb_id.txt").rename(run_dir / f"wandb_id.{stamp}.txt")

    steps_per_iter = 1 + d_steps
    cb = cfg.callbacks
    built = build_callbacks(cb.get("build"))
    callbacks: list[pl.Callback] = [
        pl.callbacks.ModelCheckpoint(
            dirpath=ckpt_dir, filename="iter_{train/iteration:.0f}", auto_insert_metric_name=False,
            save_last=True, save_top_k=0, every_n_train_steps=int(cb.ckpt_every_n_iterations) * steps_per_iter,
        ),
        ResumeHint(str(last)),
        GracefulStop(last),  # requeue signal / SIGTERM: last.ckpt at the iteration's end, requeue, exit
        *built,
        *(extra_callbacks or []),
    ]
    samples = next((c for c in built if isinstance(c, SampleGridCallback)), None)
    trainer_cfg = OmegaConf.to_container(cfg.trainer, resolve=True)
    if trainer_cfg.get("enable_progress_bar", True) and importlib.util.find_spec("rich") is not None:
        callbacks.append(IterationProgressBar(steps_per_iter))  # "iteration 340/600", not "Epoch 49/-2"
    strategy = trainer_cfg.pop("strategy", "auto")
    if isinstance(strategy, dict):
        strategy = instantiate(strategy)
    trainer_cfg.pop("val_check_interval", None)
    trainer_cfg["precision"] = trainer_cfg.get("precision") or speed.precision  # trainer config, when set, wins
    trainer_cfg["benchmark"] = speed.cudnn_benchmark
    trainer = make_trainer(
        trainer_cfg,
        strategy=strategy,
        max_steps=resolve_iterations(cfg, datamodule, world) * steps_per_iter,
        max_epochs=-1,
        val_check_interval=int(cb.val_every_n_iterations),
        check_val_every_n_epoch=None,
        logger=make_logger(cfg.get("logger"), id_file=run_dir / "wandb_id.txt"),
        callbacks=callbacks,
        default_root_dir=str(run_dir),
        enable_model_summary=False,
        # GracefulStop requeues, after a whole iteration; Lightning's own auto-requeue would save mid-iteration
        plugins=[SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None,
    )
    if trainer.world_size != world:  # the batch was split for another number of processes
        raise ConfigError(f"the trainer runs {trainer.world_size} processes, the batch was split over {world}: "
                          "give trainer.devices and trainer.num_nodes as numbers")
    return MetaLearningRun(cfg, datamodule, module, trainer, run_dir, ckpt_path, samples, speed, batch)


def build_callbacks(nodes: DictConfig | None) -> list[pl.Callback]:
    """The callbacks of ``callbacks.build``, each built by its ``_target_`` in order (``experiments/callbacks/``).
    A null entry, or a factory that returns None (a callback turned off in its settings), adds none; an entry that
    cannot be built or builds no Lightning callback is one line naming it."""
    out: list[pl.Callback] = []
    for name, node in (nodes or {}).items():
        if node is None:
            continue
        try:
            callback = build(node, _convert_="all")
        except ConfigError as exc:
            raise ConfigError(f"callbacks.build.{name}: {exc}") from exc
        if callback is None:
            continue
        if not isinstance(callback, pl.Callback):
            raise ConfigError(f"callbacks.build.{name} built a {type(callback).__name__}, not a Lightning callback")
        out.append(callback)
    return out


def meta_learn(cfg: DictConfig) -> MetaLearningRun:
    """Build, train, and print where the results went."""
    try:
        run = build_meta_learning(cfg)
    except TalkingHeadError:
        raise
    except USER_ERRORS as exc:
        raise ConfigError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
    if run.trainer.is_global_zero:
        precision = run.trainer.precision
        print(f"speed: {precision}, {run.speed.describe().split(', ', 1)[1]} (speed=plain: the fp32 reference path)")
        gpu = isinstance(run.trainer.accelerator, pl.accelerators.CUDAAccelerator)
        print(run.batch.describe("GPU" if gpu else "device"))
    if run.ckpt_path:
        print(f"resuming from {run.ckpt_path} (resume=false starts afresh)")
    start = time.time()
    run.fit()
    if run.trainer.is_global_zero:
        print(f"\nmeta-learning done in {time.time() - start:.0f} s, {run.module.iteration} iterations")
        print(f"  checkpoint: {run.run_dir / 'checkpoints' / 'last.ckpt'}")
        if run.samples is not None:
            print(f"  samples:    {run.samples.out_dir} (latest.png)")
        for logger in run.trainer.loggers:
            if isinstance(logger, pl.loggers.WandbLogger):
                exp = logger.experiment
                where = getattr(exp, "url", None) or getattr(getattr(exp, "settings", None), "sync_dir", None)
                mode = "offline" if logger._offline else "online"
                print(f"  W&B run:    {where} ({mode}; `wandb sync {where}` uploads it)" if mode == "offline"
                      else f"  W&B run:    {where}")
            elif isinstance(logger, pl.loggers.CSVLogger):
                print(f"  CSV log:    {logger.log_dir}/metrics.csv")
    return run
