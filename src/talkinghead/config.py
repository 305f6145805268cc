"""Hydra config composition with errors that say what to fix.

The configs live in ``experiments/`` at the repository root (one group per concern, ``experiment/*.yaml`` for
whole experiments).  ``TALKINGHEAD_CONFIG_DIR`` points elsewhere.
"""
from __future__ import annotations

import difflib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from talkinghead.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where an installed package (a wheel, ``pip install .``) keeps its configs: setup.cfg maps ``experiments/`` to
#: the ``talkinghead.experiments`` package data.
PACKAGED = Path(__file__).resolve().parent / "experiments"
CONFIG_DIR_ENV = "TALKINGHEAD_CONFIG_DIR"


def config_dir() -> Path:
    """``$TALKINGHEAD_CONFIG_DIR``, else the configs installed with the package, else the checkout's
    ``experiments/`` (a source checkout or an editable install)."""
    if os.environ.get(CONFIG_DIR_ENV):
        path = Path(os.environ[CONFIG_DIR_ENV]).resolve()
        where = f"${CONFIG_DIR_ENV}={path}"
    else:
        path = PACKAGED if (PACKAGED / "meta_learn.yaml").is_file() else REPO_ROOT / "experiments"
        where = str(path)
    if not (path / "meta_learn.yaml").is_file():
        raise ConfigError(f"no experiment configs (meta_learn.yaml) in {where}: point ${CONFIG_DIR_ENV} at a "
                          "folder of talkinghead's experiments/, or reinstall talkinghead")
    return path


def group_options(group: str) -> list[str]:
    """Names of the options of a config group (``experiment`` -> ``['embedded', 'vox1_paper', ...]``)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml") if not p.stem.startswith("_"))  # _base


def groups() -> list[str]:
    return sorted(p.name for p in config_dir().iterdir() if p.is_dir())


def _all_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items_ex(resolve=False) if hasattr(cfg, "items_ex") else cfg.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, DictConfig):
            keys.extend(_all_keys(v, full + "."))
    return keys


def _explain(exc: Exception, config_name: str, overrides: Sequence[str]) -> str:
    text = str(exc)
    missing = re.search(r"Could not find '([\w/]+)/(\w[\w.-]*)'", text) or re.search(
        r"In '[\w/]+': Could not find '([\w/]+)/(\w[\w.-]*)'", text
    )
    if missing:
        group, name = missing.groups()
        group = group.strip("/")
        opts = group_options(group)
        close = difflib.get_close_matches(name, opts, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        return f"unknown {group} '{name}'{hint}; choose from: {', '.join(opts)}"
    key = re.search(r"Key '([\w.-]+)' is not in struct", text) or re.search(
        r"Could not override '([\w.-]+)'", text
    )
    if key:
        bad = next((o.split("=")[0].lstrip("+~") for o in overrides if key.group(1) in o.split("=")[0]), key.group(1))
        try:
            base = compose(config_name, [o for o in overrides if not o.split("=")[0].lstrip("+~") == bad])
            close = difflib.get_close_matches(bad, _all_keys(base), n=3)
        except Exception:  # noqa: BLE001 - suggestions are best effort
            close = []
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        stage = config_name.replace("_", "-")
        return f"no config key '{bad}'{hint} (see `talkinghead {stage} --cfg` for all keys)"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"config error: {first}"


#: the yes/no words of every surface (the Makefile's ``bool`` reads the same ones, any case)
YES = ("1", "yes", "true", "on", "y")
NO = ("0", "no", "false", "off", "n", "")

_SPEED_FLAGS = ("speed.channels_last", "speed.cudnn_benchmark")
#: the yes/no keys of each root config, read with :func:`as_flag` when it is composed (a test holds this list equal
#: to the keys whose defaults are true/false)
FLAGS = {
    "finetune": ("overwrite", "progress", "g_first", *_SPEED_FLAGS),
    "evaluate": ("progress", "eyes", "cross.full", "cross.fit", "finetune.g_first", *_SPEED_FLAGS),
    "meta_learn": ("resume", "loss.w_from_fakes", "trainer.enable_progress_bar", "callbacks.weight_average.enabled",
                   "callbacks.health.enabled", "data.pin_memory", "optim.g_first", *_SPEED_FLAGS,
                   # copies of the keys above in the nodes built by _target_ (read as well: a line may set either)
                   "callbacks.build.weight_average.settings.enabled",
                   "callbacks.build.health.cfg.enabled"),
}


def as_flag(value: object, key: str) -> bool:
    """``value`` of the yes/no key ``key`` as a bool: true/1/yes/on -> True, false/0/no/off/empty/null -> False
    (any case); anything else is a one-line ``ConfigError`` naming the key and the accepted words."""
    if value is None or isinstance(value, bool):
        return bool(value)
    word = str(value).strip().lower()
    if isinstance(value, (int, float, str)) and word in YES + NO:
        return word in YES
    raise ConfigError(f"{key} must be yes or no (1/yes/true/on or 0/no/false/off), got {value!r}")


def read_flags(cfg: DictConfig, keys: Sequence[str]) -> DictConfig:
    """Each present yes/no key of ``keys`` (dotted) replaced by its bool (:func:`as_flag`), in place."""
    absent = object()
    for key in keys:
        value = OmegaConf.select(cfg, key, default=absent)
        if value is not absent:
            OmegaConf.update(cfg, key, as_flag(value, key), force_add=False)
    return cfg


def compose(config_name: str = "meta_learn", overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``experiments/<config_name>.yaml`` with command-line style overrides; raises ConfigError.
    Its yes/no keys (:data:`FLAGS`) come back as bools."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = hydra_compose(config_name=config_name, overrides=list(overrides))
    except ConfigError:
        raise
    except Exception as exc:  # Hydra/OmegaConf raise many types; all become one line
        raise ConfigError(_explain(exc, config_name, overrides)) from exc
    finally:
        GlobalHydra.instance().clear()
    try:
        OmegaConf.resolve(cfg)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"config error: {str(exc).splitlines()[0]}") from exc
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"config value(s) not set: {', '.join(missing)} (give them as key=value)")
    return read_flags(cfg, FLAGS.get(config_name, ()))


# ------------------------------------------------------------------------------------------------ command lines
#: keys whose values are paths (or ids): quoted for Hydra here, so that any character works unquoted
PATH_KEYS = ("id", "ckpt", "ff_ckpt", "out", "out_dir", "data_root", "runs_dir", "run_dir", "data.root")


def hydra_quote(value: str) -> str:
    """``value`` as one quoted Hydra string (``'it\\'s'``): backslashes before a quote or at the end doubled."""
    value = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    value = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, value)
    return f"'{value}'"


def hydra_overrides(overrides: Sequence[str]) -> list[str]:
    """``overrides`` as Hydra reads them: a path key's value is quoted (unless it is a list, null, an
    interpolation or quoted already); any other override Hydra cannot read is a one-line ``ConfigError`` that
    shows it quoted."""
    parser = OverridesParser.create()
    out = []
    for o in overrides:
        key, eq, value = o.partition("=")
        bare = key.lstrip("+~")
        if eq and bare in PATH_KEYS and value and value != "null" and not value.startswith(("[", "'", '"', "${")):
            o = f"{key}={hydra_quote(value)}"
        try:
            parser.parse_overrides([o])
        except Exception as exc:  # noqa: BLE001 - Hydra's lexer and parser errors
            if not eq:
                raise ConfigError(f"cannot read {o!r}: give key=value") from exc
            raise ConfigError(
                f"cannot read {o!r} (Hydra: {str(exc).splitlines()[0][:80]}): quote the value, "
                f"e.g. {key}={hydra_quote(value)} (in make: ARGS=\"{key}={hydra_quote(value)}\")"
            ) from exc
        out.append(o)
    return out
