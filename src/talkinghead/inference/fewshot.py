"""Few-shot avatars (paper Sec. 3.4): ê_new from T frames, then fine-tuning (FT) or not (FF).

:func:`fit_avatar` turns T frames of one person (already loaded, see ``talkinghead.inference.shots``) into an
:class:`~talkinghead.inference.avatar.Avatar`: ê_new = mean E over them -> ψ' = P ê_new (FF), or fine-tuning of G and D with
:class:`~talkinghead.modules.finetune.FineTuningModule` (FT).  Finding the frames, saving, previews and progress
are ``talkinghead.api``'s; the ``finetune`` command and the demo page call that API.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, RandomSampler

from talkinghead.inference.avatar import Avatar, MetaLearned, generator_delta
from talkinghead.training.build import build_content_loss
from talkinghead.callbacks.weight_average import WeightAverage
from talkinghead.config import as_flag, compose, config_dir, group_options
from talkinghead.errors import ConfigError
from talkinghead.landmarks.adapt import neutral_index
from talkinghead.landmarks.sets import recorded_set, require_same_set, set_of_points
from talkinghead.losses.terms import term_weights
from talkinghead.modules.finetune import FewShotFrames, FineTuningModule, initial_psi, initial_w
from talkinghead.inference.render import FrameRenderer, pick_device
from talkinghead.speed import Speed

MODES = ("FT", "FF")


OPTIMIZERS = {"adam": torch.optim.Adam, "radam": torch.optim.RAdam}


#: the fine-tuning recipe a checkpoint gets when it names none (``finetuning_recipe`` in its config)
DEFAULT_RECIPE = "paper"


def recipe(name: str = DEFAULT_RECIPE) -> dict[str, Any]:
    """The settings of ``experiments/finetuning/<name>.yaml``: the one place where fine-tuning's numbers live."""
    folder = config_dir() / "finetuning"
    if not (folder / f"{name}.yaml").is_file():
        raise ConfigError(f"no fine-tuning recipe {name!r} in {folder}: known {', '.join(group_options('finetuning'))}")
    return dict(OmegaConf.to_container(compose(f"finetuning/{name}"), resolve=True))  # with what it inherits


@dataclass
class FineTuneSettings:
    """Optimisation settings of fine-tuning, as ``experiments/finetuning/<recipe>.yaml`` gives them (no number is
    written here: :meth:`from_recipe` / :meth:`from_config` read the recipe, which ``make finetune``, ``make
    evaluate`` and the page all compose)."""

    steps: int  # generator updates (the most, when early_stop_window is set)
    lr_g: float
    lr_d: float
    betas: tuple[float, float]
    eps: float
    d_steps_per_g: int
    g_first: bool  # FSTH's order: G's update, then D's, from the same fakes
    batch_size: int
    loss_weights: Mapping[str, float] | None  # None: the meta-learning run's weights
    seed: int
    device: str
    epochs: float | None  # when set: steps = epochs x T / batch; None: ``steps``
    optimizer: str  # adam | radam (torch.optim's)
    average_decay: float | None  # G and psi' averaged while fine-tuning; None: off
    early_stop_window: int = 0  # > 0: stop when the reconstruction terms stop improving (:class:`StopWhenFlat`)
    early_stop_min_gain: float = 0.0
    early_stop_patience: int = 1
    recipe: str = DEFAULT_RECIPE  # which experiments/finetuning/*.yaml these came from
    speed: Speed = field(default_factory=Speed)  # fast path (default) or Speed.plain(); compile auto = off here

    def steps_for(self, T: int) -> int:
        """Generator updates for T frames: ``steps``, or ``epochs`` passes over the T frames when set."""
        if self.epochs is None:
            return self.steps
        return max(1, math.ceil(self.epochs * T / min(self.batch_size, T)))

    def describe(self, T: int) -> str:
        epochs = f" ({self.epochs:g} epochs over T={T})" if self.epochs is not None else ""
        most = "at most " if self.early_stop_window else ""
        flat = (f", stopping when the reconstruction gains < {self.early_stop_min_gain:g} over "
                f"{self.early_stop_window} steps" if self.early_stop_window else "")
        return f"{most}{self.steps_for(T)} steps{epochs}{flat} (recipe {self.recipe})"

    def as_dict(self) -> dict[str, Any]:
        """The settings a run used, as plain values (recorded in the avatar file)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "speed"}
        out["betas"] = list(self.betas)
        out["loss_weights"] = None if self.loss_weights is None else dict(self.loss_weights)
        return out

    @classmethod
    def from_recipe(cls, name: str = DEFAULT_RECIPE, speed: Mapping[str, Any] | Speed | None = None,
                    **overrides: Any) -> FineTuneSettings:
        """``experiments/finetuning/<name>.yaml`` with ``overrides`` (``steps=3``, ``epochs=None``...)."""
        cfg = {**recipe(name), **overrides}
        return cls.from_config(cfg, speed=speed, recipe_name=name)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], speed: Mapping[str, Any] | Speed | None = None,
                    recipe_name: str | None = None) -> FineTuneSettings:
        """From a composed config holding a recipe's keys (``experiments/finetune.yaml``'s top level, evaluate's
        ``finetune:``); a key it lacks comes from its recipe (``finetuning_recipe``, else paper), never from here."""
        name = recipe_name or str(cfg.get("finetuning_recipe") or DEFAULT_RECIPE)
        keys = [f.name for f in fields(cls) if f.name not in ("recipe", "speed")]
        base = recipe(name) if any(k not in cfg for k in keys) else {}  # composed only when a key is missing
        get = lambda key: cfg[key] if key in cfg else base.get(key)  # noqa: E731
        weights = get("loss_weights")
        speed = speed if speed is not None else cfg.get("speed")
        s = cls(
            steps=int(get("steps")),
            lr_g=float(get("lr_g")),
            lr_d=float(get("lr_d")),
            betas=tuple(float(b) for b in get("betas")),
            eps=float(get("eps")),
            d_steps_per_g=int(get("d_steps_per_g")),
            g_first=as_flag(get("g_first"), "g_first"),
            batch_size=int(get("batch_size")),
            loss_weights=None if weights is None else {k: float(v) for k, v in dict(weights).items()},
            seed=int(get("seed")),
            device=str(get("device")),
            epochs=None if get("epochs") is None else float(get("epochs")),
            optimizer=str(get("optimizer")).lower(),
            average_decay=None if get("average_decay") is None else float(get("average_decay")),
            early_stop_window=int(get("early_stop_window") or 0),
            early_stop_min_gain=float(get("early_stop_min_gain") or 0.0),
            early_stop_patience=int(get("early_stop_patience") or 1),
            recipe=name,
            speed=speed if isinstance(speed, Speed) else Speed.from_config(speed),
        )
        s.check()
        return s

    def check(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"steps must be >= 0, got {self.steps}")
        if self.epochs is not None and self.epochs <= 0:
            raise ConfigError(f"epochs must be > 0 (or null to use steps), got {self.epochs}")
        if self.batch_size < 1 or self.d_steps_per_g < 1:
            raise ConfigError(
                f"batch_size and d_steps_per_g must be >= 1, got {self.batch_size}, {self.d_steps_per_g}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.average_decay is not None and not 0.0 <= self.average_decay < 1.0:
            raise ConfigError(f"average_decay must be in [0, 1) (or null: no average), got {self.average_decay}")
        if self.early_stop_window < 0 or self.early_stop_patience < 1 or self.early_stop_min_gain < 0:
            raise ConfigError("early_stop_window must be >= 0, early_stop_patience >= 1 and early_stop_min_gain >= 0, "
                              f"got {self.early_stop_window}, {self.early_stop_patience}, {self.early_stop_min_gain}")
        if self.loss_weights is not None:
            term_weights(self.loss_weights, "loss_weights")


def settings_for(meta_config: Mapping[str, Any], overrides: Mapping[str, Any] | None = None,
                 speed: Mapping[str, Any] | Speed | None = None, recipe_name: str | None = None) -> FineTuneSettings:
    """The fine-tuning settings of a meta-learned model: the recipe its experiment names (``finetuning_recipe``:
    a 64² embedded model is not fine-tuned with the 256² paper recipe), else ``paper``; ``recipe_name`` picks
    another; ``overrides`` replace single keys.  The CLI, the API, evaluation and the page all call this."""
    name = recipe_name or str(meta_config.get("finetuning_recipe") or DEFAULT_RECIPE)
    return FineTuneSettings.from_recipe(name, speed=speed, **dict(overrides or {}))


def recipe_overrides(meta_config: Mapping[str, Any], overrides: Sequence[str], group: str = "finetuning"
                     ) -> tuple[str, list[str]]:
    """``(recipe, overrides)`` to compose a command's config with: the recipe the line names (``finetuning=X``;
    evaluate's group is ``finetuning@finetune``), else the model's (``finetuning_recipe``), put first, so that Hydra
    merges the line's own keys (``steps=100``, ``+finetune.loss_weights.pixel=3``) over that recipe."""
    named = [o.partition("=")[2] for o in overrides if o.partition("=")[0].lstrip("+~") == group]
    if named:
        return named[-1], list(overrides)
    name = str(meta_config.get("finetuning_recipe") or DEFAULT_RECIPE)
    return name, [f"{group}={name}", *overrides]


class StopWhenFlat(pl.Callback):
    """Ends fine-tuning when its reconstruction terms stop improving: every ``window`` generator updates the mean of
    the weighted reconstruction terms (pixel, content) over that window is compared with the best window so far;
    ``patience`` windows in a row that gain less than ``min_gain`` (relative) stop the run.  ``stopped_at``: the
    generator update it stopped after, or None when it ran all its steps."""

    TERMS = ("pixel", "content_vgg19", "content_vggface")

    def __init__(self, window: int, min_gain: float, patience: int, weights: Mapping[str, float]) -> None:
        self.window, self.min_gain, self.patience = window, min_gain, patience
        self.weights = {k: float(weights.get(k, 0.0)) for k in self.TERMS if weights.get(k, 0.0)}
        self.values: list[float] = []
        self.best, self.flat, self.last, self.stopped_at = math.inf, 0, -1, None

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, *args: Any, **kwargs: Any) -> None:
        it = int(module.iteration)
        if it == self.last or not self.weights:
            return
        self.last = it
        logged = trainer.callback_metrics
        self.values.append(sum(w * float(logged[f"finetune/g_{k}"]) for k, w in self.weights.items()
                               if f"finetune/g_{k}" in logged))
        if len(self.values) % self.window:
            return
        mean = sum(self.values[-self.window:]) / self.window
        if mean < self.best * (1.0 - self.min_gain):
            self.best, self.flat = mean, 0
        else:
            self.flat += 1
        if self.flat >= self.patience:
            self.stopped_at = it
            trainer.should_stop = True


@contextlib.contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence what a short Trainer prints each time it starts ("GPU available…", the litlogger tip, the
    ``validation_step`` warning): fine-tuning runs once per avatar, 60 times in one ``make evaluate``."""
    names = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
             "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
             "pytorch_lightning.trainer.connectors.signal_connector")  # "Received SIGTERM": the CLI says it once
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*validation_step.*")
            warnings.filterwarnings("ignore", message=r".*val_dataloader.*")
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*LeafSpec.*")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


class _StepReport(pl.Callback):
    """Calls ``on_step(iteration, total)`` after each generator update of fine-tuning."""

    def __init__(self, on_step: Callable[[int, int], None], total: int) -> None:
        self.on_step, self.total, self.last = on_step, total, -1

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, *args: Any, **kwargs: Any) -> None:
        it = int(getattr(module, "iteration", trainer.global_step))
        if it != self.last:
            self.last = it
            self.on_step(min(it, self.total), self.total)


@torch.no_grad()
def embed_person(embedder: Any, frames: torch.Tensor, landmark_images: torch.Tensor) -> torch.Tensor:
    """ê_new = mean_t E(x_t, y_t): (T, 3, S, S) x 2 -> (emb,), in eval mode."""
    was = embedder.training
    embedder.eval()
    device = next(embedder.parameters()).device
    e = embedder.embed(frames[None].to(device), landmark_images[None].to(device))[0]
    embedder.train(was)
    return e.cpu()


@dataclass
class FineTuned:
    """What :func:`fit_avatar` returns: the avatar and the generator to render it with (eval mode)."""

    avatar: Avatar
    generator: Any
    seconds: float
    l1_before: float
    l1_after: float
    speed: Speed = field(default_factory=Speed)
    device: str = "cpu"  # where render() runs

    def render(self, landmark_images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """G(y; ψ') for (N, 3, S, S) landmark images on the inference path (``talkinghead.inference.render``)."""
        return FrameRenderer(self.generator, self.avatar.psi, self.device, self.speed).render(landmark_images, batch_size)


def _loss_terms(meta: MetaLearned, settings: FineTuneSettings) -> tuple[dict[str, float], Any]:
    weights = dict(settings.loss_weights or OmegaConf.to_container(meta.config.loss.weights, resolve=True))
    loss_cfg = copy.deepcopy(meta.config.loss)
    for k in ("content_vgg19", "content_vggface"):
        loss_cfg.weights[k] = weights.get(k, 0.0)
    return weights, build_content_loss(loss_cfg)


def fit_avatar(
    meta: MetaLearned,
    shots: Mapping[str, torch.Tensor],
    *,
    mode: str = "FT",
    settings: FineTuneSettings | None = None,
    person_id: str | None = None,
    source: str = "",
    logger: Any = False,
    progress: bool = False,
    on_step: Callable[[int, int], None] | None = None,
) -> FineTuned:
    """Fine-tune (FT) or not (FF) the meta-learned model on the T frames ``shots``.

    ``shots``: ``frames``, ``landmark_images`` (T, 3, S, S) in [-1, 1] and ``landmarks`` (T, 68, 2) (T, 72, 2 for a
    model of landmark set ``ibug68+iris``: the sets must match, ``talkinghead.landmarks.sets``).
    ``meta`` is left unchanged: FT trains copies of G and D; FF only computes ψ' = P ê_new.
    ``progress``: Lightning's progress bar; ``on_step(iteration, total)``: called after each generator update.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be FT or FF, got {mode!r}")
    require_same_set(f"the fine-tuning frames ({source or person_id or 'shots'})", set_of_points(shots["landmarks"]),
                     f"the model {meta.path}", recorded_set(meta.config.model))
    settings = settings or settings_for(meta.config)
    start = time.time()
    x, y = shots["frames"], shots["landmark_images"]
    T = int(x.shape[0])
    e_new = embed_person(meta.embedder, x, y)
    meta_state = {k: v.clone() for k, v in meta.generator.state_dict().items()}
    device = pick_device(settings.device)

    def l1(gen: Any, psi: torch.Tensor) -> float:
        with torch.no_grad():
            out = torch.cat([gen(b.to(device), psi=psi.to(device)).cpu() for b in y.split(16)])
        return float((out - x).abs().mean())

    speed = settings.speed.resolve(device, long_run=False)  # minutes at most: compile only when asked for
    speed.apply_process()
    psi0 = initial_psi(meta.generator, e_new)  # FF's psi' = P e_new (the averaged G's P when there is an average)
    meta.generator.to(device)
    before = l1(meta.generator, psi0)
    meta.generator.cpu()
    num_steps = settings.steps_for(T)
    if mode == "FF" or num_steps == 0:
        generator = meta.generator
        psi, w_prime = psi0, initial_w(meta.discriminator, e_new)
        after = before
        delta: dict[str, torch.Tensor] = {}
        steps = 0
    else:
        generator, psi, w_prime, steps = _fine_tune(meta, x, y, e_new, settings, speed, device, num_steps,
                                                    logger=logger, progress=progress, on_step=on_step)
        generator.to(device)
        after = l1(generator, psi)
        generator.cpu()
        delta = generator_delta(meta_state, generator.state_dict())
    ref = shots["landmarks"][neutral_index(shots["landmarks"].numpy())]
    avatar = Avatar(
        psi=psi.detach().cpu().clone(),
        w_prime=w_prime.detach().cpu().clone(),
        e_new=e_new.clone(),
        generator_delta=delta,
        reference_landmarks=ref.clone().float(),
        T=T,
        mode=mode,
        steps=int(steps),
        person_id=person_id,
        source=source,
        model_config=OmegaConf.to_container(meta.config.model, resolve=True),
        data_config=OmegaConf.to_container(meta.config.data, resolve=True),
        fingerprint=meta.fingerprint,
        checkpoint=str(Path(meta.path).resolve()),
        finetune_settings=settings.as_dict() if mode == "FT" else None,
    )
    return FineTuned(avatar, generator.eval(), time.time() - start, before, after, speed, str(device))


def _fine_tune(
    meta: MetaLearned, x: torch.Tensor, y: torch.Tensor, e_new: torch.Tensor, settings: FineTuneSettings,
    speed: Speed, device: torch.device, num_steps: int, *, logger: Any, progress: bool,
    on_step: Callable[[int, int], None] | None,
) -> tuple[Any, torch.Tensor, torch.Tensor, int]:
    """FT: copies of the trained G and of D fine-tuned for ``num_steps`` generator updates on the T frames ``x`` with
    landmark images ``y`` (T, 3, S, S), ψ' and w' starting from ê_new; the running average of G and ψ' when the
    settings keep one (FSTH's avatar).  Returns ``(G in eval mode, ψ', w', generator updates run)``."""
    weights, content = _loss_terms(meta, settings)
    generator = copy.deepcopy(meta.generator)
    if meta.trained_generator_state is not None:
        # FSTH fine-tunes the trained G (and D) and averages it while doing so; e_new came from the averaged E
        generator.load_state_dict(meta.trained_generator_state)
    opt = OPTIMIZERS[settings.optimizer]
    impl = speed.optimizer_kwargs()
    if opt is not torch.optim.Adam and impl.pop("fused", False):  # RAdam has no fused kernel: foreach instead
        impl["foreach"] = True
    module = FineTuningModule(
        generator, copy.deepcopy(meta.discriminator), e_new, weights,
        optimizer_g=partial(opt, lr=settings.lr_g, betas=settings.betas, eps=settings.eps, **impl),
        optimizer_d=partial(opt, lr=settings.lr_d, betas=settings.betas, eps=settings.eps, **impl),
        d_steps_per_g=settings.d_steps_per_g, g_first=settings.g_first, content_loss=content,
        channels_last=speed.channels_last,
    )
    speed.prepare(module.generator, module.discriminator, content)
    module.train()
    T = int(x.shape[0])
    bs = min(settings.batch_size, T) if T > 1 else 1
    sampler = RandomSampler(FewShotFrames(x, y), replacement=True, num_samples=num_steps * bs,
                            generator=torch.Generator().manual_seed(settings.seed))
    loader = DataLoader(FewShotFrames(x, y), batch_size=bs, sampler=sampler, drop_last=True)
    average = None
    if settings.average_decay is not None:  # FSTH: the avatar is the running average of G and psi'
        average = WeightAverage(settings.average_decay, ("generator", "psi"))
    callbacks: list[pl.Callback] = [] if average is None else [average]
    if on_step is not None:
        callbacks.append(_StepReport(on_step, num_steps))
    if settings.early_stop_window:
        callbacks.append(StopWhenFlat(settings.early_stop_window, settings.early_stop_min_gain,
                                      settings.early_stop_patience, weights))
    with quiet_lightning():
        trainer = pl.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=speed.precision,
            benchmark=speed.cudnn_benchmark, max_steps=num_steps * (1 + settings.d_steps_per_g), max_epochs=1,
            logger=logger, enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
            log_every_n_steps=max(1, min(10, num_steps)), num_sanity_val_steps=0, limit_val_batches=0,
            callbacks=callbacks,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            try:
                trainer.fit(module, loader)
            except SystemExit:  # Lightning ends a Ctrl-C'd fit with sys.exit(1): it is the Ctrl-C
                if trainer.interrupted:
                    raise KeyboardInterrupt from None
                raise
    if average is not None:  # the avatar is the running average of G and psi' (FSTH's drive.py renders it)
        assert average.average is not None
        averaged = average.average.module
        generator.load_state_dict(averaged.generator.state_dict())
        with torch.no_grad():
            module.psi.copy_(averaged.psi)
    return generator.eval(), module.psi.detach().cpu(), module.w_prime.detach().cpu(), module.iteration
