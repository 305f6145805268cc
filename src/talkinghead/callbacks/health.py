"""The health monitor: a training run that says, while it runs, when it goes wrong.

``HealthMonitor`` reads the values the meta-learning module already logs (``train/g_*`` loss terms, ``train/d_hinge``,
``train/d_real`` / ``train/d_fake``, ``train/e_norm``, ``train/w_e_dist``, and G's output statistics of
``talkinghead.modules.health_stats``): no extra forward pass.  In the step it only adds a few tiny device ops
(the values stacked, checked for finiteness and summed); they reach the host every ``every_n_iterations``
iterations (default: when the loggers write, ``trainer.log_every_n_steps``), in one copy.

Checks (thresholds: the ``callbacks.health`` config block, checked by ``HealthConfig.from_config``):

* ``nonfinite``: a non-finite loss term, gradient or parameter stops the run at once with one line naming it and
  the iteration it appeared at (``NonFiniteError``; the CLI exits non-zero).  A checkpoint holding a non-finite
  tensor is never written (``on_save_checkpoint`` refuses it), so ``last.ckpt`` stays the last good one.
* ``d_saturated``: D's hinge loss near 0 over a window (real scores >= 1, fake <= -1: D always wins).
* ``d_dead``: real and fake scores no apart over a window (D cannot tell them apart), or D's hinge loss flat at ~1-2.
* ``g_collapsed``: G's outputs barely differ across the batch (spread a small fraction of the real frames').
* ``g_colour``: the mean colour of G's output far from the data's (the "all red" runs).
* ``e_collapsed``: ||e_hat|| near 0, or fallen to a small fraction of its peak.
* ``e_ignored``: on the validation persons, e_hat of different persons no farther apart than e_hat of one
  person's episodes (the between/within distance ratio near 1).  e_hat is read from the embedder's output
  during the validation loop (a forward hook): still no extra forward pass.
* ``w_e_drift``: the mean |W_i - e_hat_i| grown well past its low point (only with a non-zero match weight).

The D, G and E checks start after ``warmup_iterations`` and judge means over ``window`` iterations.  Each warning
is one line starting with ``health:`` (printed on rank 0), a check that comes right again says so, and each check's
state goes to every logger as ``health/<check>`` (1: warning, 0: fine) beside the watched values
(``health/d_hinge`` ...).  A check that cannot be computed says why once.  Every run ends with one ``health:``
summary line.
"""
from __future__ import annotations

import math
import sys
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from talkinghead.callbacks import logging_step
from talkinghead.errors import ConfigError, NonFiniteError

CHECKS = ("nonfinite", "d_saturated", "d_dead", "g_collapsed", "g_colour", "e_collapsed", "e_ignored", "w_e_drift")
#: logged scalars whose window means the D / G / E checks judge
WATCHED = ("train/d_hinge", "train/d_real", "train/d_fake", "train/g_spread", "train/x_spread", "train/g_colour_gap",
           "train/e_norm", "train/w_e_dist")


@dataclass(frozen=True)
class HealthConfig:
    """Thresholds of the health monitor (``callbacks.health``); see experiments/callbacks/default.yaml."""

    enabled: bool = True
    every_n_iterations: int | None = None   # None: trainer.log_every_n_steps
    warmup_iterations: int = 200
    window: int = 100
    d_saturated_hinge: float = 0.05
    d_dead_gap: float = 0.02
    d_flat_std: float = 0.002
    g_spread_ratio: float = 0.05
    g_colour_gap: float = 0.5
    e_norm_min: float = 1e-4
    e_norm_drop: float = 0.02
    e_ratio_min: float = 1.05
    w_e_growth: float = 3.0
    max_val_samples: int = 512

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, key: str = "callbacks.health") -> HealthConfig:
        """Checked thresholds; a nonsense value is a one-line ``ConfigError`` naming the key."""
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) {unknown} in {key}; known: {sorted(known)}")

        def whole(name: str, low: int, allow_none: bool = False) -> None:
            v = cfg.get(name, getattr(cls, name))
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"{key}.{name} must be a whole number >= {low}"
                                  f"{' (or null)' if allow_none else ''}, got {v!r}")

        def number(name: str, low: float, high: float, low_open: bool = False) -> None:
            v = cfg.get(name, getattr(cls, name))
            bad = isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
            if not bad:
                bad = v < low or v > high or (low_open and v == low)
            if bad:
                span = f"{'(' if low_open else '['}{low:g}, {high:g}]"
                raise ConfigError(f"{key}.{name} must be a number in {span}, got {v!r}")

        if not isinstance(cfg.get("enabled", True), bool):
            raise ConfigError(f"{key}.enabled must be true or false, got {cfg['enabled']!r}")
        whole("every_n_iterations", 1, allow_none=True)
        whole("warmup_iterations", 0)
        whole("window", 1)
        whole("max_val_samples", 2)
        number("d_saturated_hinge", 0, 2)        # the hinge loss lies in [0, inf); 2 is D at chance (scores 0)
        number("d_dead_gap", 0, 2)
        number("d_flat_std", 0, 1)
        number("g_spread_ratio", 0, 1)            # a fraction of the real frames' spread
        number("g_colour_gap", 0, 2, low_open=True)  # images in [-1, 1]
        number("e_norm_min", 0, math.inf)
        number("e_norm_drop", 0, 1)               # a fraction of the peak norm
        number("e_ratio_min", 1, math.inf)        # between/within: 1 = persons indistinguishable
        number("w_e_growth", 1, math.inf, low_open=True)
        return cls(**cfg)


@dataclass
class _Interval:
    """Means of the watched values over one host read-out interval (iterations ``start+1 .. end``)."""

    start: int
    end: int
    means: dict[str, float]
    d_hinge_sq: float | None


class HealthMonitor(pl.Callback):
    """Watch a ``MetaLearningModule`` run for the failure modes of the module docstring.

    Args:
        config: the thresholds (``HealthConfig`` or its mapping).
        match_weight: the match term's weight (``loss.weights.match``); 0 turns the W-e drift check off.

    Attributes:
        events: ``[(check, iteration, line), ...]`` of every warning line printed (``recovered`` lines too).
        notes: ``{check: reason}`` of checks that could not be computed.
        active: checks warning now.
    """

    def __init__(self, config: HealthConfig | Mapping[str, Any] | None = None, match_weight: float = 1.0) -> None:
        self.cfg = config if isinstance(config, HealthConfig) else HealthConfig.from_config(config)
        self.match_weight = float(match_weight)
        self.events: list[tuple[str, int, str]] = []
        self.warned: dict[str, int] = {}           # check -> iteration of its first warning
        self.notes: dict[str, str] = {}
        self.active: set[str] = set()
        self.stopped: str | None = None
        self.values: dict[str, float] = {}
        self._intervals: deque[_Interval] = deque()
        self._keys: tuple[str, ...] = ()
        self._first_bad: torch.Tensor | None = None
        self._sum: torch.Tensor | None = None
        self._n = 0
        self._start = 0
        self._e_peak = 0.0
        self._w_e_low = math.inf
        self._summarised = False
        self._every = 1
        self._hook: Any = None
        self._captured: torch.Tensor | None = None
        self._val: list[tuple[list[str], torch.Tensor]] = []
        self._last_good: tuple[int, str] | None = None
        self._fp16 = False

    # ------------------------------------------------------------------------------------------------ output
    def say(self, check: str, iteration: int, text: str) -> str:
        line = f"health: {text}"
        self.events.append((check, iteration, line))
        if self._rank_zero:
            print(line, file=sys.stderr, flush=True)
        return line

    def note(self, check: str, reason: str) -> None:
        """Say once that ``check`` cannot be computed, and why."""
        if check not in self.notes:
            self.notes[check] = reason
            if self._rank_zero:
                print(f"health: {check} not checked: {reason}", file=sys.stderr, flush=True)

    def set_state(self, check: str, bad: bool, iteration: int, text: str) -> None:
        if bad and check not in self.active:
            self.active.add(check)
            self.warned.setdefault(check, iteration)
            self.say(check, iteration, f"{check} at iteration {iteration}: {text}")
        elif not bad and check in self.active:
            self.active.discard(check)
            self.say(check, iteration, f"{check} recovered at iteration {iteration}")

    def summary(self, iteration: int) -> str:
        if self.stopped:
            head = f"stopped: {self.stopped}"
        elif self.warned:
            head = f"{len(self.warned)} warning(s): " + ", ".join(
                f"{c} (from iteration {i}{', still on' if c in self.active else ', recovered'})"
                for c, i in self.warned.items())
        else:
            head = "no warnings"
        checked = [c for c in CHECKS if c not in self.notes]
        if not self.cfg.enabled:
            return "health: summary: monitor off (callbacks.health.enabled=false)"
        tail = f"; checked: {', '.join(checked)}"
        if self.notes:
            tail += "; not checked: " + ", ".join(f"{c} ({r})" for c, r in self.notes.items())
        if iteration < self.cfg.warmup_iterations + self.cfg.window:
            tail += (f"; the D/G/E checks need {self.cfg.warmup_iterations + self.cfg.window} iterations "
                     f"(warmup_iterations + window) and had {iteration}")
        return f"health: summary after {iteration} iterations: {head}{tail}"

    def _summarise(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._summarised:
            return
        self._summarised = True
        line = self.summary(int(pl_module.iteration))
        self.events.append(("summary", int(pl_module.iteration), line))
        if self._rank_zero:
            print(line, file=sys.stderr, flush=True)

    # ------------------------------------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._rank_zero = trainer.is_global_zero
        self._every = int(self.cfg.every_n_iterations or max(int(trainer.log_every_n_steps), 1))
        self._fp16 = str(trainer.precision).startswith("16")

    _rank_zero = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = int(pl_module.iteration)
        if self.cfg.enabled and self.match_weight == 0:
            self.note("w_e_drift", "the match weight is 0 (nothing pulls e_hat towards W)")
        if self.cfg.enabled and self._fp16:
            self.note("nonfinite", "gradients not checked under 16-mixed precision (the grad scaler skips inf steps)")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if not self.cfg.enabled:
            return
        it = int(pl_module.iteration)
        metrics = trainer.callback_metrics
        device = pl_module.device
        keys = tuple(sorted(k for k, v in metrics.items() if k.startswith("train/") and isinstance(v, torch.Tensor)
                            and v.device == device and v.numel() == 1))
        if keys != self._keys:
            if self._n:
                self.read_out(trainer, pl_module)
            self._keys = keys
            self._first_bad = torch.full((len(keys),), -1, dtype=torch.long, device=device)
            self._sum = None
        if keys:
            vec = torch.stack([metrics[k].detach().float().reshape(()) for k in keys])  # (n_keys,)
            finite = torch.isfinite(vec)
            self._first_bad = torch.where(~finite & (self._first_bad < 0), it, self._first_bad)
            watched = torch.where(finite, vec, torch.zeros_like(vec))
            watched = torch.cat([watched, watched[self._keys.index("train/d_hinge")].square().reshape(1)]) \
                if "train/d_hinge" in self._keys else watched
            self._sum = watched if self._sum is None else self._sum + watched
            self._n += 1
        if it % self._every == 0:
            self.read_out(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.cfg.enabled and self._n:
            self.read_out(trainer, pl_module)
        self._summarise(trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._summarise(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Refuse to write a checkpoint holding a non-finite tensor (raising here happens before the file is
        written): the checkpoint on disk stays the last good one."""
        if not self.cfg.enabled:
            return
        it = int(pl_module.iteration)
        if self._n:
            self.read_out(trainer, pl_module)  # names the loss term when one went non-finite first
        bad = first_nonfinite(_tensors(checkpoint.get("state_dict", {}), "parameter ")) or first_nonfinite(
            _tensors({f"optimizer {i}": s.get("state", {}) for i, s in enumerate(checkpoint.get("optimizer_states", []))},
                     ""))
        if bad:
            self.stop(trainer, it, f"{bad} in the checkpoint to write", it)
        path = getattr(trainer.checkpoint_callback, "dirpath", None)
        self._last_good = (it, str(Path(path) / "last.ckpt") if path else "the checkpoint just written")

    # ---------------------------------------------------------------------------------------- validation ê
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val = []
        embedder = getattr(pl_module, "embedder", None)
        if not self.cfg.enabled or trainer.sanity_checking or embedder is None or not trainer.is_global_zero:
            return

        def grab(module: Any, inputs: Any, output: torch.Tensor) -> None:
            self._captured = output.detach()

        self._hook = embedder.register_forward_hook(grab)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        e, self._captured = self._captured, None
        if self._hook is None or e is None or not isinstance(batch, Mapping):
            return
        persons = batch.get("person_id")
        frames = batch.get("frames")
        if persons is None or frames is None:
            self.note("e_ignored", "validation batches carry no person_id")
            return
        b, k = frames.shape[0], frames.shape[1] - 1
        if e.shape[0] != b * k or sum(len(p) for p, _ in self._val) >= self.cfg.max_val_samples:
            return
        self._val.append(([str(p) for p in persons], e.float().view(b, k, -1).mean(dim=1).cpu()))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._hook is None:
            return
        self._hook.remove()
        self._hook = None
        it = int(pl_module.iteration)
        if not self._val:
            self.note("e_ignored", "no validation persons (the validation loader is empty)")
            return
        persons = [p for ps, _ in self._val for p in ps]
        e_hat = torch.cat([e for _, e in self._val])
        ratio, reason = between_within_ratio(persons, e_hat)
        if ratio is None:
            self.note("e_ignored", reason)
            return
        self.log_values(trainer, {"health/e_between_within": ratio})
        if it - self._start < 1 or it < self.cfg.warmup_iterations:
            return
        self.set_state("e_ignored", ratio < self.cfg.e_ratio_min, it,
                       f"the embedder ignores the person: e_hat of different validation persons is {ratio:.3f}x as "
                       f"far apart as e_hat of one person's episodes (needs >= {self.cfg.e_ratio_min:g}; "
                       f"{len(set(persons))} persons, {len(persons)} episodes)")
        self.log_values(trainer, {"health/e_ignored": float("e_ignored" in self.active)})

    # --------------------------------------------------------------------------------------------- read-out
    def read_out(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Bring the accumulated values to the host (one copy), stop on a non-finite one, judge the window."""
        it = int(pl_module.iteration)
        n, self._n = self._n, 0
        if not self._keys or self._first_bad is None:
            return
        host = torch.cat([self._first_bad.float(), self._sum if self._sum is not None else
                          torch.zeros(0, device=self._first_bad.device)]).tolist()
        first_bad = [int(v) for v in host[:len(self._keys)]]
        sums = host[len(self._keys):]
        self._first_bad.fill_(-1)
        self._sum = None
        bad_terms = sorted((i, k) for k, i in zip(self._keys, first_bad) if i >= 0)
        what, at = None, it
        if bad_terms:
            at, key = bad_terms[0]
            what = f"{key} ({'loss term' if '/g_' in key or '/d_hinge' in key else 'logged value'})"
        else:
            what = self.nonfinite_tensor(pl_module)
        if trainer.world_size > 1:  # every rank stops together
            if trainer.strategy.reduce_boolean_decision(what is not None, all=False) and what is None:
                what = "a value on another rank"
        if what is not None:
            self.stop(trainer, it, what, at)
        if n == 0 or not sums:
            return
        means = {k: s / n for k, s in zip(self._keys, sums) if k in WATCHED}
        sq = sums[len(self._keys)] / n if len(sums) > len(self._keys) else None
        start = it - n
        if start >= self.cfg.warmup_iterations:
            self._intervals.append(_Interval(start, it, means, sq))
        while self._intervals and it - self._intervals[0].end >= self.cfg.window:
            self._intervals.popleft()
        self.judge(trainer, it)

    def nonfinite_tensor(self, pl_module: pl.LightningModule) -> str | None:
        """``"gradient of <name>"`` / ``"parameter <name>"`` of the first non-finite one, else None."""
        named = [(n, p) for n, p in pl_module.named_parameters() if p.requires_grad]
        if not self._fp16:
            bad = first_nonfinite((f"gradient of {n}", p.grad) for n, p in named if p.grad is not None)
            if bad:
                return bad
        return first_nonfinite((f"parameter {n}", p) for n, p in named)

    def stop(self, trainer: pl.Trainer, iteration: int, what: str, at: int) -> None:
        self.stopped = f"non-finite {what} at iteration {at}"
        self.say("nonfinite", at, f"nonfinite at iteration {at}: {what} is not finite; training stopped")
        if self._last_good:
            it, path = self._last_good
            keep = f"the last good checkpoint is {path} (iteration {it}); the same command resumes from it"
        else:
            keep = "no checkpoint was written before it (a rerun starts afresh)"
        self.log_values(trainer, {"health/nonfinite": 1.0})
        raise NonFiniteError(f"training stopped at iteration {iteration}: non-finite {what} (from iteration {at}); "
                             f"{keep} once the cause is fixed (lower the learning rates, check the data)")

    def judge(self, trainer: pl.Trainer, it: int) -> None:
        cfg = self.cfg
        ivs = list(self._intervals)
        span = sum(iv.end - iv.start for iv in ivs)
        if not ivs or span < cfg.window:
            return

        def mean(key: str) -> float | None:
            parts = [(iv.means[key], iv.end - iv.start) for iv in ivs if key in iv.means]
            if not parts:
                return None
            return sum(v * w for v, w in parts) / sum(w for _, w in parts)

        a, b = ivs[0].start, ivs[-1].end
        where = f"over iterations {a + 1}-{b}"
        values: dict[str, float] = {}
        hinge, real, fake = mean("train/d_hinge"), mean("train/d_real"), mean("train/d_fake")
        if hinge is not None and real is not None and fake is not None:
            sqs = [(iv.d_hinge_sq, iv.end - iv.start) for iv in ivs if iv.d_hinge_sq is not None]
            std = math.sqrt(max(sum(v * w for v, w in sqs) / sum(w for _, w in sqs) - hinge ** 2, 0.0)) if sqs else None
            values.update({"health/d_hinge": hinge, "health/d_real": real, "health/d_fake": fake,
                           "health/d_gap": real - fake})
            self.set_state("d_saturated", hinge < cfg.d_saturated_hinge, it,
                           f"D saturated: its hinge loss is {hinge:.3f} {where} (below {cfg.d_saturated_hinge:g}; real "
                           f"score {real:+.2f}, fake {fake:+.2f}): D always wins and G learns little from it")
            dead = real - fake < cfg.d_dead_gap
            flat = std is not None and std < cfg.d_flat_std and 0.9 <= hinge <= 2.1
            why = (f"real and fake scores {real:+.2f} / {fake:+.2f} {where} (gap below {cfg.d_dead_gap:g}): "
                   "D does not tell them apart (on tens of videos, loss.w_from_fakes=true kept it alive: docs/training.md)"
                   if dead else
                   f"D's hinge loss is flat at {hinge:.3f} (std {std:.4f} {where}, below {cfg.d_flat_std:g})")
            self.set_state("d_dead", dead or flat, it, f"D dead: {why}")
        else:
            self.note("d_saturated", "train/d_hinge, train/d_real, train/d_fake are not logged")
            self.note("d_dead", "train/d_hinge, train/d_real, train/d_fake are not logged")
        g_spread, x_spread = mean("train/g_spread"), mean("train/x_spread")
        if g_spread is None or x_spread is None:
            self.note("g_collapsed", "train/g_spread is not logged (batch size 1: no spread across a batch)")
        elif x_spread < 1e-6:
            self.note("g_collapsed", "the real frames of a batch are all the same image")
        else:
            ratio = g_spread / x_spread
            values["health/g_spread_ratio"] = ratio
            self.set_state("g_collapsed", ratio < cfg.g_spread_ratio, it,
                           f"G's output collapsed: its spread across the batch is {ratio:.3f} of the real frames' "
                           f"{where} (below {cfg.g_spread_ratio:g}): G renders (almost) the same image for everyone")
        colour = mean("train/g_colour_gap")
        if colour is None:
            self.note("g_colour", "train/g_colour_gap is not logged")
        else:
            values["health/g_colour_gap"] = colour
            self.set_state("g_colour", colour > cfg.g_colour_gap, it,
                           f"G's colours drifted: its mean colour is {colour:.3f} from the data's in one channel "
                           f"{where} (above {cfg.g_colour_gap:g}, images in [-1, 1])")
        e_norm = mean("train/e_norm")
        if e_norm is None:
            self.note("e_collapsed", "train/e_norm is not logged")
        else:
            self._e_peak = max(self._e_peak, e_norm)
            values["health/e_norm"] = e_norm
            low = e_norm < cfg.e_norm_min or e_norm < cfg.e_norm_drop * self._e_peak
            self.set_state("e_collapsed", low, it,
                           f"the embedder collapsed: ||e_hat|| is {e_norm:.2e} {where} (peak {self._e_peak:.2e}; "
                           f"floor {cfg.e_norm_min:g}, or {cfg.e_norm_drop:g} x the peak)")
        dist = mean("train/w_e_dist")
        if dist is None:
            self.note("w_e_drift", "train/w_e_dist is not logged")
        elif self.match_weight:
            self._w_e_low = min(self._w_e_low, dist)
            values["health/w_e_dist"] = dist
            grown = self._w_e_low > 0 and dist > cfg.w_e_growth * self._w_e_low
            self.set_state("w_e_drift", grown, it,
                           f"W and e_hat drift apart: mean |W_i - e_hat_i| is {dist:.3g} {where}, "
                           f"{dist / max(self._w_e_low, 1e-12):.1f}x its low point {self._w_e_low:.3g} "
                           f"(above {cfg.w_e_growth:g}x) although the match term pulls them together")
        for c in ("d_saturated", "d_dead", "g_collapsed", "g_colour", "e_collapsed", "w_e_drift"):
            if c not in self.notes:
                values[f"health/{c}"] = float(c in self.active)
        values["health/warnings"] = float(len(self.active))
        self.values.update(values)
        self.log_values(trainer, values)

    def log_values(self, trainer: pl.Trainer, values: Mapping[str, float]) -> None:
        if not trainer.is_global_zero or not values:
            return
        for logger in trainer.loggers:
            logger.log_metrics(dict(values), step=logging_step(trainer))


# ------------------------------------------------------------------------------------------------ helpers
def _tensors(tree: Any, prefix: str) -> list[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs of a nested dict/list of tensors."""
    out: list[tuple[str, torch.Tensor]] = []
    if isinstance(tree, torch.Tensor):
        out.append((prefix.strip(), tree))
    elif isinstance(tree, Mapping):
        for k, v in tree.items():
            out.extend(_tensors(v, f"{prefix}{k}" if not prefix or prefix.endswith(" ") else f"{prefix}.{k}"))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            out.extend(_tensors(v, f"{prefix}.{i}"))
    return out


def first_nonfinite(named: Any) -> str | None:
    """Name of the first floating tensor of ``named`` ((name, tensor) pairs) holding a non-finite value.

    One device-to-host copy for all of them (a flag per tensor, stacked)."""
    named = [(n, t._values() if t.is_sparse else t) for n, t in named  # W's sparse row gradients: their values
             if isinstance(t, torch.Tensor) and t.is_floating_point()]
    named = [(n, t) for n, t in named if t.numel()]
    if not named:
        return None
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for n, t in named:
        by_device.setdefault(t.device, []).append((n, t))
    for group in by_device.values():
        ok = torch.stack([t.detach().isfinite().all() for _, t in group]).tolist()
        for (n, _), fine in zip(group, ok):
            if not fine:
                return n
    return None


def between_within_ratio(persons: list[str], e_hat: torch.Tensor) -> tuple[float | None, str]:
    """Mean L2 distance of e_hat (N, emb) between different persons over that between episodes of one person.

    Returns (ratio, "") or (None, why it cannot be computed).  All e_hat equal (an embedder whose output is 0):
    ratio 1 (the persons are indistinguishable)."""
    if len(set(persons)) < 2:
        return None, f"{len(set(persons))} validation person(s); the between/within ratio needs two"
    ids = {p: i for i, p in enumerate(sorted(set(persons)))}
    label = torch.tensor([ids[p] for p in persons])
    same = label[:, None] == label[None, :]
    off_diag = ~torch.eye(len(persons), dtype=torch.bool)
    if not (same & off_diag).any():
        return None, "no validation person has two episodes (the within-person distance needs two)"
    d = torch.cdist(e_hat.double(), e_hat.double())
    within, between = d[same & off_diag].mean().item(), d[~same].mean().item()
    if within <= 1e-12:
        return (1.0, "") if between <= 1e-12 else (math.inf, "")
    return between / within, ""


def health_monitor_from_config(cfg: Mapping[str, Any] | None, match_weight: float) -> HealthMonitor:
    """The monitor of a ``callbacks.health`` block (None: the defaults)."""
    return HealthMonitor(HealthConfig.from_config(cfg), match_weight=match_weight)
