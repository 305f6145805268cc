"""Building every stage's objects from the composed config: networks, losses, the meta-learning module, the
speed settings, the Trainer.  One layer below the stages (meta-learning, fine-tuning, the rehearsal, the
benchmarks), which each import it; it imports no stage.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import replace
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from talkinghead.errors import ConfigError, TalkingHeadError
from talkinghead.training.loggers import drop_lightning_notes
from talkinghead.losses.content import content_loss_from_config
from talkinghead.modules.meta_learning import MetaLearningModule
from talkinghead.nets.interface import check_built, check_model_config
from talkinghead.speed import Speed

USER_ERRORS = (TalkingHeadError, ValueError, FileNotFoundError, NotADirectoryError)


def build(cfg: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that re-raises the user's error (bad value, missing file) instead of
    Hydra's wrapper around it, so the CLI can print it as one line."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(cfg, **kwargs)
    except InstantiationException as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, USER_ERRORS):
            cause = cause.__cause__
        if cause is not None:
            raise cause from exc
        target = cfg.get("_target_", "?") if hasattr(cfg, "get") else "?"
        said = str(exc).splitlines()[0]
        if said.startswith("Error locating target"):
            said = f"no such class or function{closest_target(str(target))}"
        raise ConfigError(f"cannot build {target}: {said}") from exc


def closest_target(target: str) -> str:
    """``"; did you mean pkg.mod.Name?"`` for a dotted ``target`` that names nothing, from the names of the deepest
    module on its path that imports; ``""`` when nothing is close."""
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:i]))
        except Exception:  # noqa: BLE001 - any import failure: try the parent
            continue
        close = difflib.get_close_matches(parts[i], [n for n in dir(module) if not n.startswith("_")], n=1)
        return f"; did you mean {'.'.join(parts[:i])}.{close[0]}?" if close else ""
    return ""


def build_content_loss(loss_cfg: DictConfig) -> Any:
    """The VGG19 + VGGFace content loss of ``loss_cfg`` with unit weights (the module weighs every term from
    config itself), or None when both of its weights are 0; see ``content_loss_from_config``."""
    return content_loss_from_config(loss_cfg)


def build_networks(model_cfg: DictConfig, num_videos: int, w_norm: str | None = None) -> tuple[Any, Any, Any]:
    """(Embedder, Generator, ProjectionDiscriminator) from ``model`` config and the W table size.

    ``w_norm``: the W table's normalisation when a checkpoint says so (``w_norm_in_state``); configs saved before
    ``model.discriminator.w_norm`` existed had a spectrally normalised W.  Each class must meet the model interface
    (``talkinghead.nets.interface``): one that lacks a member is refused before anything is built."""
    check_model_config(model_cfg)
    embedder = check_built("embedder", build(model_cfg.embedder))
    generator = check_built("generator", build(model_cfg.generator))
    extra = {"w_norm": w_norm} if w_norm is not None else {}
    discriminator = check_built("discriminator", build(model_cfg.discriminator, num_videos=num_videos, **extra))
    return embedder, generator, discriminator


def trainer_device(trainer_cfg: Any) -> torch.device:
    """The device a trainer config runs on (``accelerator`` gpu/cuda, cpu, or auto)."""
    accel = str(trainer_cfg.get("accelerator", "auto"))
    if accel in ("gpu", "cuda") or (accel == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def is_distributed(trainer_cfg: Any) -> bool:
    """True when a trainer config runs several processes (DDP over devices or nodes)."""
    devices = trainer_cfg.get("devices", 1)
    strategy = trainer_cfg.get("strategy", "auto")
    target = strategy.get("_target_", "") if hasattr(strategy, "get") else str(strategy)
    return devices not in (1, "1") or int(trainer_cfg.get("num_nodes", 1)) > 1 or "ddp" in target.lower()


def resolve_speed(cfg: DictConfig) -> Speed:
    """The ``speed`` settings for the trainer's device, applied process-wide (threads, cuDNN, TF32).

    ``compile: auto`` compiles single-process CUDA runs only: compiled networks inside DDP with
    ``find_unused_parameters`` have not been verified here, so a DDP run compiles only with ``speed.compile=true``.
    """
    speed = Speed.from_config(OmegaConf.to_container(cfg.speed, resolve=True) if cfg.get("speed") else None)
    auto_compile = speed.compile == "auto"
    speed = speed.resolve(trainer_device(cfg.trainer))
    if auto_compile and speed.compile and is_distributed(cfg.trainer):
        speed = replace(speed, compile=False)
    speed.apply_process()
    return speed


def build_module(
    cfg: DictConfig, num_videos: int, speed: Speed | None = None, content_loss: Any = "config"
) -> MetaLearningModule:
    """The meta-learning LightningModule of ``cfg`` for a W table of ``num_videos`` rows, set up for ``speed``.

    ``content_loss``: ``"config"`` builds it from ``cfg.loss`` (loading the weight files); a module is used as is.
    """
    speed = speed or Speed.plain()
    embedder, generator, discriminator = build_networks(cfg.model, num_videos)
    if isinstance(content_loss, str):
        content_loss = build_content_loss(cfg.loss)
    factory = build(cfg.module, _partial_=True)  # the class of ``module._target_``; its values come from their groups
    module = factory(
        embedder=embedder, generator=generator, discriminator=discriminator,
        loss_weights=OmegaConf.to_container(cfg.loss.weights),  # read here: tools edit them after composing
        w_from_fakes=bool(cfg.loss.get("w_from_fakes", False)),
        d_steps_per_g=int(cfg.optim.d_steps_per_g), g_first=bool(cfg.optim.get("g_first", False)),
        optimizer_g=instantiate(cfg.optim.g, **speed.optimizer_kwargs()),
        optimizer_d=instantiate(cfg.optim.d, **speed.optimizer_kwargs()),
        optimizer_w=instantiate(cfg.optim.w, _convert_="all") if cfg.optim.get("w") else None,  # plain lists: checkpoints load weights_only
        content_loss=content_loss, config=OmegaConf.to_container(cfg, resolve=True),
        channels_last=speed.channels_last,
    )
    if not isinstance(module, MetaLearningModule):
        raise ConfigError(f"module._target_={cfg.module.get('_target_')} built a {type(module).__name__}, "
                          "not a MetaLearningModule")
    speed.prepare(embedder, generator, discriminator)
    if content_loss is not None:
        content_loss.to(memory_format=speed.memory_format)
    return module


def world_size(trainer_cfg: Any) -> int:
    """Processes the Trainer of ``trainer_cfg`` will train with: ``num_nodes`` x devices per node, the devices
    counted as Lightning counts them (``-1``, ``"auto"``, a list or ``"0,1"`` of GPUs).  Known before the Trainer
    exists, so that the DataModule can be built with its per-device batch (``data_modules.batch``)."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException
    from pytorch_lightning.accelerators import CPUAccelerator, CUDAAccelerator

    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    devices = trainer_cfg.get("devices", "auto")
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > 0:
        return nodes * devices
    gpu = trainer_device(trainer_cfg).type == "cuda"
    kind = CUDAAccelerator if gpu else CPUAccelerator
    if devices == "auto":
        return nodes * kind.auto_device_count()
    try:
        return nodes * len(kind.get_parallel_devices(kind.parse_devices(devices)))
    except MisconfigurationException as exc:
        hint = "; no GPU here: add trainer=cpu" if gpu and not torch.cuda.is_available() else ""
        raise ConfigError(f"trainer.devices={devices!r}: {str(exc).splitlines()[0]}{hint}") from exc


def make_trainer(trainer_cfg: dict[str, Any], **kwargs: Any) -> pl.Trainer:
    """``pl.Trainer`` whose set-up errors (no GPU on this machine, a bad strategy) say which config to change."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    drop_lightning_notes()
    try:
        return pl.Trainer(**trainer_cfg, **kwargs)
    except MisconfigurationException as exc:
        hint = ""
        if trainer_cfg.get("accelerator") == "gpu" and not __import__("torch").cuda.is_available():
            hint = "; no GPU here: add trainer=cpu (make meta-learn ... ARGS=trainer=cpu)"
        raise ConfigError(f"trainer config: {str(exc).splitlines()[0]}{hint}") from exc
