"""``talkinghead finetune``: make an avatar of one person from T frames (paper Sec. 3.4), FT or FF.

Steps: compose ``experiments/finetune.yaml`` -> load the meta-learned checkpoint (given, or the newest run's) ->
find the person's frames (``talkinghead.shots``) -> pick T of them -> ê_new = mean E over them -> fine-tune
(:class:`~talkinghead.modules.finetune.FineTuningModule`) or not (FF) -> write the avatar file, a sample grid and
a preview video (also to W&B when that logger is on).
"""

from __future__ import annotations

import math

import copy
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, RandomSampler

from talkinghead.avatar import (
    Avatar,
    MetaLearned,
    generator_delta,
    load_meta_learned,
    resolve_checkpoint,
    save_avatar,
)
from talkinghead.errors import ConfigError
from talkinghead.landmarks.adapt import neutral_index
from talkinghead.modules.finetune import FewShotFrames, FineTuningModule, initial_psi, initial_w
from talkinghead.modules.meta_learning import GENERATOR_TERMS
from talkinghead.speed import Speed

MODES = ("FT", "FF")


@dataclass
class FineTuneSettings:
    """Optimisation settings of fine-tuning (``experiments/finetune.yaml``)."""

    steps: int = 40
    lr_g: float = 5e-5  # paper Sec. 4 (the meta-learning rates; vt fine-tunes with them too)
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.999)  # the authors' FSTH code (beta1 = 0, eps = 1e-5)
    eps: float = 1e-5
    d_steps_per_g: int = 2  # paper Sec. 4: two D updates per G update
    batch_size: int = 4
    loss_weights: Mapping[str, float] | None = None  # None: the meta-learning run's weights
    seed: int = 0
    device: str = "auto"
    epochs: float | None = 40  # steps = epochs x T / batch (the paper counts fine-tuning in epochs); None: steps
    speed: Speed = field(default_factory=Speed)  # fast path (default) or Speed.plain(); compile auto = off here

    def steps_for(self, T: int) -> int:
        """Generator updates for T frames: ``steps``, or ``epochs`` passes over the T frames when set."""
        if self.epochs is None:
            return self.steps
        return max(1, math.ceil(self.epochs * T / min(self.batch_size, T)))

    def describe(self, T: int) -> str:
        epochs = f" ({self.epochs:g} epochs over T={T})" if self.epochs is not None else ""
        return f"{self.steps_for(T)} steps{epochs}"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], speed: Mapping[str, Any] | None = None) -> FineTuneSettings:
        """From ``experiments/finetune.yaml`` (its ``speed`` group, or ``speed`` given apart, e.g. by evaluate)."""
        weights = cfg.get("loss_weights")
        speed = speed if speed is not None else cfg.get("speed")
        s = cls(
            steps=int(cfg.get("steps", 40)),
            lr_g=float(cfg.get("lr_g", 5e-5)),
            lr_d=float(cfg.get("lr_d", 2e-4)),
            betas=tuple(cfg.get("betas", (0.0, 0.999))),
            eps=float(cfg.get("eps", 1e-5)),
            d_steps_per_g=int(cfg.get("d_steps_per_g", 2)),
            batch_size=int(cfg.get("batch_size", 4)),
            loss_weights=None if weights is None else {k: float(v) for k, v in dict(weights).items()},
            seed=int(cfg.get("seed", 0)),
            device=str(cfg.get("device", "auto")),
            epochs=None if cfg.get("epochs", 40) is None else float(cfg.get("epochs", 40)),
            speed=Speed.from_config(speed),
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
        if self.loss_weights is not None:
            unknown = set(self.loss_weights) - set(GENERATOR_TERMS)
            if unknown:
                raise ConfigError(
                    f"unknown loss term(s) {sorted(unknown)} in loss_weights; known: {list(GENERATOR_TERMS)}"
                )


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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
    """What :func:`make_avatar` returns: the avatar and the generator to render it with (eval mode)."""

    avatar: Avatar
    generator: Any
    seconds: float
    l1_before: float
    l1_after: float
    speed: Speed = field(default_factory=Speed)
    device: str = "cpu"  # where render() runs

    def render(self, landmark_images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """G(y; ψ') for (N, 3, S, S) landmark images on the inference path (``talkinghead.render``)."""
        from talkinghead.render import FrameRenderer

        return FrameRenderer(self.generator, self.avatar.psi, self.device, self.speed).render(landmark_images, batch_size)


def _loss_terms(meta: MetaLearned, settings: FineTuneSettings) -> tuple[dict[str, float], Any]:
    from talkinghead.train import build_content_loss

    weights = dict(settings.loss_weights or OmegaConf.to_container(meta.config.loss.weights, resolve=True))
    loss_cfg = copy.deepcopy(meta.config.loss)
    for k in ("content_vgg19", "content_vggface"):
        loss_cfg.weights[k] = weights.get(k, 0.0)
    return weights, build_content_loss(loss_cfg)


def make_avatar(
    meta: MetaLearned,
    shots: Mapping[str, torch.Tensor],
    *,
    mode: str = "FT",
    settings: FineTuneSettings | None = None,
    person_id: str | None = None,
    source: str = "",
    logger: Any = False,
    progress: bool = False,
) -> FineTuned:
    """Fine-tune (FT) or not (FF) the meta-learned model on the T frames ``shots``.

    ``shots``: ``frames``, ``landmark_images`` (T, 3, S, S) in [-1, 1] and ``landmarks`` (T, 68, 2).
    ``meta`` is left unchanged: FT trains copies of G and D; FF only computes ψ' = P ê_new.
    """
    if mode not in MODES:
        raise ConfigError(f"mode must be FT or FF, got {mode!r}")
    settings = settings or FineTuneSettings()
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
    psi0 = initial_psi(meta.generator, e_new)
    num_steps = settings.steps_for(T)
    if mode == "FF" or num_steps == 0:
        generator = meta.generator
        psi, w_prime = psi0, initial_w(meta.discriminator, e_new)
        generator.to(device)
        before = after = l1(generator, psi)
        generator.cpu()
        delta: dict[str, torch.Tensor] = {}
        steps = 0
    else:
        weights, content = _loss_terms(meta, settings)
        generator = copy.deepcopy(meta.generator)
        module = FineTuningModule(
            generator,
            copy.deepcopy(meta.discriminator),
            e_new,
            weights,
            optimizer_g=partial(torch.optim.Adam, lr=settings.lr_g, betas=settings.betas, eps=settings.eps,
                                **speed.optimizer_kwargs()),
            optimizer_d=partial(torch.optim.Adam, lr=settings.lr_d, betas=settings.betas, eps=settings.eps,
                                **speed.optimizer_kwargs()),
            d_steps_per_g=settings.d_steps_per_g,
            content_loss=content,
            channels_last=speed.channels_last,
        )
        speed.prepare(module.generator, module.discriminator, content)
        module.train()
        generator.eval().to(device)
        before = l1(generator, psi0)
        generator.train().cpu()
        bs = min(settings.batch_size, T) if T > 1 else 1
        sampler = RandomSampler(
            FewShotFrames(x, y),
            replacement=True,
            num_samples=num_steps * bs,
            generator=torch.Generator().manual_seed(settings.seed),
        )
        loader = DataLoader(FewShotFrames(x, y), batch_size=bs, sampler=sampler, drop_last=True)
        trainer = pl.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu",
            devices=1,
            precision=speed.precision,
            benchmark=speed.cudnn_benchmark,
            max_steps=num_steps * (1 + settings.d_steps_per_g),
            max_epochs=1,
            logger=logger,
            enable_checkpointing=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
            log_every_n_steps=max(1, min(10, num_steps)),
            num_sanity_val_steps=0,
            limit_val_batches=0,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            trainer.fit(module, loader)
        generator.eval()
        psi = module.psi.detach().cpu()
        w_prime = module.w_prime.detach().cpu()
        generator.to(device)
        after = l1(generator, psi)
        generator.cpu()
        delta = generator_delta(meta_state, generator.state_dict())
        steps = module.iteration
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
    )
    return FineTuned(avatar, generator.eval(), time.time() - start, before, after, speed, str(device))


# ------------------------------------------------------------------------------------------------ the stage
def slug(text: str) -> str:
    """A folder-safe name for an id or path."""
    text = Path(text).stem if ("." in Path(text).name and "/" in text and Path(text).suffix) else text
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "avatar"


def stage_logger(logger_cfg: DictConfig | None, save_dir: Path, name: str) -> Any:
    """A fresh logger per run (never resumes another run's W&B id), or False."""
    if logger_cfg is None:
        return False
    from hydra.utils import instantiate

    from talkinghead.train import wandb_mode

    cfg = OmegaConf.to_container(logger_cfg, resolve=True)
    cfg["save_dir"] = str(save_dir)
    if cfg["_target_"].endswith("WandbLogger"):
        offline = wandb_mode(cfg.pop("mode", "auto"))
        cfg["offline"] = offline
        cfg["name"] = name
        import secrets

        cfg["id"] = secrets.token_hex(4)
    save_dir.mkdir(parents=True, exist_ok=True)
    return instantiate(cfg)


def wandb_loggers(logger: Any) -> list[Any]:
    loggers = logger if isinstance(logger, list) else [logger]
    return [lg for lg in loggers if isinstance(lg, pl.loggers.WandbLogger)]


def compose_finetune(overrides: Sequence[str]) -> DictConfig:
    from talkinghead.config import compose

    cfg = compose("finetune", overrides)
    if str(cfg.mode) not in MODES:
        raise ConfigError(f"mode must be FT (fine-tune) or FF (feed-forward, no fine-tuning), got {cfg.mode}")
    if int(cfg.T) < 1:
        raise ConfigError(f"T must be >= 1 (frames of the new person), got {cfg.T}")
    return cfg


def finetune_main(overrides: Sequence[str], detector: Any = None) -> Path:
    """Run the fine-tuning stage; returns the avatar file's path.  ``detector`` overrides the landmark backend."""
    from talkinghead import shots as shots_mod
    from talkinghead.visualize import make_grid, save_png

    cfg = compose_finetune(overrides)
    settings = FineTuneSettings.from_config(cfg)
    ckpt = resolve_checkpoint(cfg.ckpt, cfg.runs_dir)
    meta = load_meta_learned(ckpt)
    size = meta.image_size
    person = shots_mod.resolve(
        str(cfg.id),
        meta.config.data,
        size,
        data_root=cfg.get("data_root"),
        synthetic_video_length=int(cfg.synthetic_video_length),
        detector=detector,
        detector_backend=str(cfg.detector),
        max_frames=int(cfg.max_frames),
    )
    for note in person.notes:
        print(note, file=sys.stderr)
    T = int(cfg.T)
    person.require(T)
    positions = shots_mod.evenly(person.num_frames, T)
    shots = person.load(positions)
    name = f"{slug(str(cfg.id))}_T{T}_{cfg.mode}"
    out = Path(cfg.out) if cfg.get("out") else Path(cfg.out_dir) / name / "avatar.pt"
    run_dir = out.parent
    logger = stage_logger(cfg.get("logger"), run_dir, name)
    print(
        f"{'fine-tuning' if cfg.mode == 'FT' else 'feed-forward (FF)'} {cfg.id} on T={T} frames with {ckpt}"
        + (f" for {settings.describe(T)}" if cfg.mode == "FT" else "")
    )
    result = make_avatar(
        meta,
        shots,
        mode=str(cfg.mode),
        settings=settings,
        person_id=person.person_id,
        source=str(cfg.id),
        logger=logger,
        progress=bool(cfg.progress),
    )
    save_avatar(result.avatar, out)

    # sample grid (+ FF beside FT) and a preview video on frames outside the T
    rest = sorted(set(range(person.num_frames)) - set(positions))
    preview_pos = shots_mod.evenly(len(rest), int(cfg.preview_frames)) if rest else []
    preview = person.load([rest[i] for i in preview_pos]) if preview_pos else shots
    fake = result.render(preview["landmark_images"])
    rows = []
    ff = None
    if cfg.mode == "FT":
        with torch.no_grad():
            ff = meta.generator(
                preview["landmark_images"][:4], psi=initial_psi(meta.generator, result.avatar.e_new)
            )
    for i in range(min(4, fake.shape[0])):
        row = list(shots["frames"][:4]) + [preview["landmark_images"][i]]
        row += ([ff[i]] if ff is not None else []) + [fake[i], preview["frames"][i]]
        rows.append(row)
    grid = make_grid(rows)
    grid_path = save_png(grid, run_dir / "samples.png")
    from talkinghead.reenact import side_by_side_frames, write_video

    video_path = write_video(
        run_dir / "preview.mp4",
        side_by_side_frames(preview["frames"], preview["landmark_images"], fake),
        fps=10,
    )
    caption = (
        "T sources (<=4) | target landmarks | "
        + ("FF | FT" if ff is not None else "FF")
        + " | real (frames outside the T)"
    )
    for lg in wandb_loggers(logger):
        import wandb

        lg.log_image(key="finetune/samples", images=[grid], caption=[caption])
        lg.experiment.log({"finetune/preview": wandb.Video(str(video_path), format="mp4")})
        lg.experiment.finish()
    print(
        f"avatar: {out}  ({result.avatar.mode}, T={T}, {result.avatar.steps} steps, "
        f"{len(result.avatar.generator_delta)} changed generator tensors, {result.seconds:.0f} s)"
    )
    print(f"  L1 on its T frames: {result.l1_before:.4f} (FF) -> {result.l1_after:.4f}")
    print(f"  samples: {grid_path} ({caption})")
    print(f"  preview: {video_path} (real | landmarks | avatar)")
    print(f"  reenact: make reenact AVATAR={out} DRIVER=<video or id> OUT=out.mp4")
    return out
