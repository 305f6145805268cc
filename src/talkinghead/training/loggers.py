"""Logging setup, written once for every stage: W&B (offline without an API key) or CSV, rank zero, run ids.

Meta-learning continues one W&B run across resumes (its id kept in ``<run_dir>/wandb_id.txt``); fine-tuning,
evaluation and reenactment start a fresh run each time.
"""
from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from talkinghead.errors import ConfigError

# Lightning's notes that mislead here: "`Trainer.fit` stopped: `max_steps=1200` reached" counts D's and G's
# optimiser steps (twice the iterations asked for; each stage's closing line says what it trained), and the
# litlogger tip advertises a cloud service to machines that may have no internet.
LIGHTNING_NOTES_DROPPED = ("`Trainer.fit` stopped: `max_steps=", "💡 Tip: For seamless cloud logging")


class _DropLightningNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(LIGHTNING_NOTES_DROPPED)


def drop_lightning_notes() -> None:
    """Drop ``LIGHTNING_NOTES_DROPPED`` from Lightning's rank-zero log. Idempotent; ``build.make_trainer`` calls it
    (fine-tuning's short trainers are quieter still: ``fewshot.quiet_lightning``)."""
    log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningNotes) for f in log.filters):
        log.addFilter(_DropLightningNotes())


def wandb_mode(mode: str) -> bool:
    """True for offline: ``auto`` is online only with an API key (env or ~/.netrc)."""
    if mode not in ("auto", "online", "offline"):
        raise ConfigError(f"logger.mode must be auto, online or offline, got '{mode}'")
    if mode != "auto":
        return mode == "offline"
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (netrc.exists() and "api.wandb.ai" in netrc.read_text())
    return not has_key


def is_global_rank_zero() -> bool:
    """Before the Trainer exists: rank 0 of torchrun/SLURM/Lightning-launched processes (files are made once)."""
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var) is not None:
            return int(os.environ[var]) == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


def make_logger(
    logger_cfg: DictConfig | None, save_dir: Path | None = None, name: str | None = None,
    id_file: Path | None = None,
) -> Any:
    """The Lightning logger of ``logger_cfg`` (``experiments/logger/*.yaml``), or False when logging is off.

    ``save_dir``/``name``: override the config's (a stage that logs into each avatar's own folder).
    ``id_file``: where the W&B run id is kept, so that a resumed run continues the same W&B run; written by rank
    zero only. Without it every call starts a fresh W&B run (never another run's id).
    """
    if logger_cfg is None:
        return False
    from hydra.utils import instantiate

    cfg = OmegaConf.to_container(logger_cfg, resolve=True)
    if save_dir is not None:
        cfg["save_dir"] = str(save_dir)
    Path(cfg.get("save_dir") or ".").mkdir(parents=True, exist_ok=True)
    if cfg["_target_"].endswith("WandbLogger"):
        cfg["offline"] = wandb_mode(cfg.pop("mode", "auto"))
        if name is not None:
            cfg["name"] = name
        if id_file is None:
            cfg["id"] = secrets.token_hex(4)
        elif id_file.exists():
            cfg.setdefault("id", id_file.read_text().strip())
            cfg.setdefault("resume", "allow")
        elif is_global_rank_zero():  # other ranks log nothing to W&B: Lightning's rank-zero logger
            cfg.setdefault("id", secrets.token_hex(4))
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(cfg["id"])
    return instantiate(cfg)


def wandb_loggers(logger: Any) -> list[Any]:
    """The W&B loggers among ``logger`` (one logger, a list of them, or False)."""
    loggers = logger if isinstance(logger, list) else [logger]
    return [lg for lg in loggers if isinstance(lg, pl.loggers.WandbLogger)]


def finetune_to_wandb(logger: Any, grid_path: Path, caption: str, video_path: Path) -> None:
    """Log a new avatar's sample grid and preview to the W&B loggers among ``logger``, then finish their runs."""
    for lg in wandb_loggers(logger):
        import wandb as wb  # optional: only with logger=wandb

        lg.log_image(key="finetune/samples", images=[str(grid_path)], caption=[caption])
        lg.experiment.log({"finetune/preview": wb.Video(str(video_path), format="mp4")})
        lg.experiment.finish()


def logged_after(output: Path, log: Callable[[], None]) -> str | None:
    """Run ``log``, the logging of an ``output`` already written; its failure (a full disk, W&B's teardown) is one
    warning line returned, not an error: the output does not depend on its logging.  None when it went well."""
    try:
        log()
    except Exception as exc:  # noqa: BLE001 - whatever the logger raises, the output stands
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "")
        return (f"warning: logging to W&B failed after {output} was written ({type(exc).__name__}"
                f"{': ' + first if first else ''}); {output} is complete and kept")
    return None


def log_video_to_wandb(video: Path, name: str, save_dir: Path, job_type: str = "reenact") -> None:
    """Log an mp4 to a new W&B run (offline unless an API key is configured)."""
    import wandb as wb

    run = wb.init(project="talkinghead", name=name, dir=str(save_dir), job_type=job_type,
                  mode="offline" if wandb_mode("auto") else "online")
    run.log({f"{job_type}/video": wb.Video(str(video), format="mp4")})
    run.finish()
