"""Meta-learned checkpoints and avatar files, and rendering an avatar.

An *avatar* is what fine-tuning (or the FF variant) makes of one person: the AdaIN vector ψ', the generator
tensors that fine-tuning changed (nothing for FF), D's projection vector w', ê_new, T, the person's reference
landmarks (for landmark adaptation), and the fingerprint of the meta-learned model it was made from.  It does
not hold the meta-learned weights: rendering loads them from the checkpoint and applies the avatar on top, after
checking the fingerprint (another model -> :class:`AvatarMismatchError`).

Every file is written atomically (temporary name in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import copy
import glob
import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from talkinghead.training.build import build_networks
from talkinghead.callbacks.weight_average import averaged_state
from talkinghead.decode import read_image
from talkinghead.errors import TalkingHeadError
from talkinghead.files import atomic_path
from talkinghead.landmarks.draw import landmark_image_tensor
from talkinghead.landmarks.sets import recorded_set, require_same_set, set_of_points
from talkinghead.nets.discriminator import num_videos_in_state, w_norm_in_state
from talkinghead.inference.render import FrameRenderer
from talkinghead.safe_load import UnsafeFileError, safe_load
from talkinghead.speed import Speed

AVATAR_FORMAT = "talkinghead-avatar/1"


class CheckpointError(TalkingHeadError, FileNotFoundError):
    """No meta-learned checkpoint, or one that cannot be used."""


class AvatarError(TalkingHeadError, ValueError):
    """An avatar file that is missing or not an avatar."""


class AvatarMismatchError(AvatarError):
    """The avatar was made from another meta-learned model than the one given."""


# ------------------------------------------------------------------------------------------------ checkpoints
def latest_checkpoint(runs_dir: str | Path = "runs") -> Path:
    """The newest ``<runs_dir>/*/checkpoints/last.ckpt`` by modification time."""
    found = [Path(p) for p in glob.glob(str(Path(runs_dir) / "*" / "checkpoints" / "last.ckpt"))]
    if not found:
        raise CheckpointError(
            f"no meta-learned checkpoint under {runs_dir}/: run make meta-learn first, or give CKPT=..."
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def resolve_checkpoint(ckpt: str | Path | None, runs_dir: str | Path = "runs") -> Path:
    if ckpt in (None, "", "null", "None"):
        return latest_checkpoint(runs_dir)
    path = Path(str(ckpt)).expanduser()
    if path.is_dir():  # a run folder
        if not (path / "checkpoints" / "last.ckpt").is_file():
            raise CheckpointError(f"checkpoint {ckpt} is a folder without checkpoints/last.ckpt: give a run folder "
                                  "or a .ckpt file")
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {ckpt} does not exist (give a run's checkpoints/last.ckpt)")
    return path


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def hash_tensors(h: Any, tensors: Iterable[tuple[str, torch.Tensor]]) -> Any:
    """Feed each (name, tensor) to the hashlib object ``h``: name, dtype, shape, then the bytes in row-major order
    whatever the strides; returns ``h``.

    Flattened before the byte view: a channels-last (C, Cin, 1, 1) kernel, as fine-tuning and checkpoints leave
    1x1 convolutions, counts as contiguous (``.contiguous()`` returns it as it is) with a last stride of Cin, which
    ``view(torch.uint8)`` refuses.
    """
    for name, t in tensors:
        t = t.detach().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h


def model_fingerprint(model_config: Mapping[str, Any], generator_state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the model config and the meta-learned generator's tensors (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256(_canonical(dict(model_config)).encode())
    return hash_tensors(h, ((name, generator_state[name]) for name in sorted(generator_state))).hexdigest()[:16]


def _model_summary(model_cfg: Mapping[str, Any]) -> str:
    return (f"image_size={model_cfg.get('image_size')}, emb_dim={model_cfg.get('emb_dim')}, "
            f"landmarks={recorded_set(model_cfg)}")


@dataclass
class MetaLearned:
    """A meta-learned model loaded from a Lightning checkpoint (networks in eval mode, on the CPU).

    ``embedder`` and ``generator`` hold the checkpoint's running average of the weights when it has one
    (``averaged``; ``talkinghead.callbacks.weight_average``), the discriminator its trained weights (it is not
    averaged).  ``trained_generator_state``: the generator's trained (not averaged) weights, which fine-tuning starts
    from as FSTH's does; None when the checkpoint has no average (the generator then holds the trained weights).
    """

    path: Path
    config: DictConfig
    embedder: Any
    generator: Any
    discriminator: Any
    fingerprint: str
    averaged: bool = False
    trained_generator_state: dict[str, torch.Tensor] | None = None

    @property
    def image_size(self) -> int:
        return int(self.config.model.image_size)


def load_meta_learned(ckpt: str | Path, average: bool = True) -> MetaLearned:
    """Rebuild E, G and D from the config saved in a meta-learning checkpoint and load their weights.

    ``average``: E and G from the checkpoint's running average of the weights when it holds one (FSTH's
    ``drive.py`` and fine-tuning do so); False, or a checkpoint without one: the trained weights.
    """
    path = Path(ckpt)
    try:
        data = safe_load(path, "checkpoint")
    except UnsafeFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from exc
    config = (data.get("hyper_parameters") or {}).get("config") if isinstance(data, dict) else None
    if not config or "model" not in config or "state_dict" not in data:
        raise CheckpointError(f"{path} is not a talkinghead meta-learning checkpoint (no config/state_dict)")
    cfg = OmegaConf.create(config)
    state = data["state_dict"]
    trained = state
    averaged = averaged_state(data) if average else None
    if averaged is not None:
        state = averaged

    try:
        num_videos = num_videos_in_state(state)
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from exc
    if num_videos is None:
        raise CheckpointError(f"{path} holds no discriminator W table: not a meta-learning checkpoint")
    nets = build_networks(cfg.model, num_videos, w_norm=w_norm_in_state(state))
    for prefix, net in zip(("embedder.", "generator.", "discriminator."), nets):
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            net.load_state_dict(sub)
        except RuntimeError as exc:
            first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
            raise CheckpointError(
                f"{path}: its weights do not fit the model in its config ({_model_summary(cfg.model)}): {first} "
                f"-- was it saved by another model size?"
            ) from exc
        net.eval()
    embedder, generator, discriminator = nets
    trained_g = None
    g_state = dict(generator.state_dict())
    if averaged is not None:  # both generators make an avatar (FT starts from the trained one): both are its model
        trained_g = {k[len("generator.") :]: v for k, v in trained.items() if k.startswith("generator.")}
        g_state.update({f"trained.{k}": v for k, v in trained_g.items()})
    fp = model_fingerprint(OmegaConf.to_container(cfg.model, resolve=True), g_state)
    return MetaLearned(path, cfg, embedder, generator, discriminator, fp, averaged is not None, trained_g)


# ------------------------------------------------------------------------------------------------ avatars
@dataclass
class Avatar:
    """One person's avatar (see the module docstring).  Tensors on the CPU.

    psi: (num_adain_params,) ψ';  w_prime: (emb,) w';  e_new: (emb,) ê_new;
    generator_delta: generator state-dict entries that differ from the meta-learned model (empty for FF);
    reference_landmarks: (68, 2) pixels of one of the T frames (landmark adaptation's avatar reference).

    What full-frame output (``talkinghead.inference.paste``) needs, absent (None) in avatars made before it existed:
    source_png: uint8 (bytes,) the PNG of the avatar's source frame (the photo, or the first of the T frames of a
    video), at its original size; crop_box: [x0, y0, side] of the face crop in it (``crop_frame``'s box);
    source_landmarks: (68, 2) the source frame's landmarks in pixels of the S x S crop.
    """

    psi: torch.Tensor
    w_prime: torch.Tensor
    e_new: torch.Tensor
    generator_delta: dict[str, torch.Tensor]
    reference_landmarks: torch.Tensor
    T: int
    mode: str  # "FT" | "FF"
    steps: int
    person_id: str | None
    source: str
    model_config: dict[str, Any]
    data_config: dict[str, Any]
    fingerprint: str
    checkpoint: str
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S"))
    source_png: torch.Tensor | None = None
    crop_box: list[float] | None = None
    source_landmarks: torch.Tensor | None = None
    finetune_settings: dict[str, Any] | None = None  # what FT ran with (FineTuneSettings.as_dict; recipe, steps…)

    @property
    def image_size(self) -> int:
        return int(self.model_config["image_size"])

    @property
    def landmark_set(self) -> str:
        """The landmark set its model draws (``talkinghead.landmarks.sets``; none recorded: ``ibug68``)."""
        return recorded_set(self.model_config)

    @property
    def has_source_frame(self) -> bool:
        return self.source_png is not None and self.crop_box is not None and self.source_landmarks is not None

    def set_source_frame(self, frame: Any, box: Any, landmarks: Any) -> None:
        """Keep the source frame uint8 (H, W, 3), its crop box (x0, y0, side) and the (68, 2) crop-pixel landmarks
        of its face (what paste-back needs).  The frame is stored as PNG (lossless, a fraction of the raw size)."""
        import io

        import numpy as np
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(frame, dtype=np.uint8)).save(buf, format="PNG", compress_level=6)
        self.source_png = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8).clone()
        self.crop_box = [float(v) for v in np.asarray(box, dtype=np.float64).reshape(3)]
        self.source_landmarks = torch.as_tensor(np.asarray(landmarks, dtype=np.float32)).reshape(-1, 2)[:68].clone()

    def source_frame(self, path: str | Path | None = None) -> Any:
        """The source frame uint8 (H, W, 3); an avatar made before full-frame output -> one-line AvatarError."""
        if not self.has_source_frame:
            where = f"{path} was" if path else "this avatar was"
            raise AvatarError(
                f"{where} made before full-frame output and lacks its source frame: remake it with "
                f"`make finetune ID={self.source or '<its source>'} T={self.T} MODE={self.mode}` (or reenact without full-frame output)"
            )
        # an avatar file may come from anyone: its frame is decoded within the bounds (talkinghead.decode)
        return read_image(self.source_png.numpy().tobytes(), name=f"the source frame of {path or 'the avatar'}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["format"] = AVATAR_FORMAT
        return d

    def check_model(self, meta: MetaLearned) -> None:
        """Raise :class:`AvatarMismatchError` unless ``meta`` is the model this avatar was made from."""
        cfg = OmegaConf.to_container(meta.config.model, resolve=True)
        if cfg != self.model_config:
            raise AvatarMismatchError(
                f"avatar was made for a model with {_model_summary(self.model_config)}, the checkpoint {meta.path} "
                f"has {_model_summary(cfg)}: give the checkpoint the avatar was made from ({self.checkpoint})"
            )
        if meta.fingerprint != self.fingerprint:
            raise AvatarMismatchError(
                f"avatar was made from model {self.fingerprint}, this checkpoint is {meta.fingerprint} "
                f"({meta.path}): give the checkpoint the avatar was made from ({self.checkpoint})"
            )


def generator_delta(
    before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """The entries of ``after`` that differ from ``before`` (same keys), cloned to the CPU."""
    return {
        k: v.detach().cpu().clone() for k, v in after.items() if not torch.equal(v.cpu(), before[k].cpu())
    }


def save_avatar(avatar: Avatar, path: str | Path) -> Path:
    """Write ``avatar`` to ``path`` atomically (a full disk: one-line ``DiskFullError``, no file)."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:  # a file object: torch.save then raises OSError(ENOSPC)
        torch.save(avatar.to_dict(), f)
    return Path(path)


def load_avatar(path: str | Path) -> Avatar:
    path = Path(path)
    if not path.is_file():
        raise AvatarError(f"avatar file {path} does not exist (make one with `make finetune ID=...`)")
    try:
        data = safe_load(path, "avatar file")
    except UnsafeFileError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise AvatarError(f"{path} is not an avatar file ({str(exc).splitlines()[0]})") from exc
    if not isinstance(data, dict) or data.get("format") != AVATAR_FORMAT:
        raise AvatarError(f"{path} is not a talkinghead avatar (format {AVATAR_FORMAT} expected)")
    data = dict(data)
    data.pop("format")
    known = {f.name for f in fields(Avatar)}
    required = {f.name for f in fields(Avatar) if f.default is MISSING and f.default_factory is MISSING}
    unknown, missing = sorted(set(data) - known, key=str), sorted(required - set(data))
    if unknown or missing:
        said = [f"unknown keys {', '.join(map(str, unknown))}"] * bool(unknown)
        said += [f"missing keys {', '.join(missing)}"] * bool(missing)
        raise AvatarError(f"{path} is not an avatar of format {AVATAR_FORMAT}: {'; '.join(said)} (made by another "
                          "version of talkinghead, or edited? remake it with make finetune)")
    return Avatar(**data)


def avatar_generator(avatar: Avatar, meta: MetaLearned) -> Any:
    """The generator of ``avatar``: ``meta``'s, after checking the fingerprint, with the avatar's fine-tuned
    tensors on a copy (FT; ``meta`` stays the meta-learned model), or ``meta``'s own (FF)."""
    avatar.check_model(meta)
    generator = meta.generator
    state = generator.state_dict()
    unknown = set(avatar.generator_delta) - set(state)
    if unknown:
        raise AvatarMismatchError(
            f"avatar holds generator tensors the model lacks: {sorted(unknown)[:3]}"
        )
    if avatar.generator_delta:
        generator = copy.deepcopy(generator)
        state.update(avatar.generator_delta)
        try:
            generator.load_state_dict(state)
        except RuntimeError as exc:
            first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc))
            raise AvatarMismatchError(f"avatar's generator tensors do not fit the model: {first}") from exc
    return generator


class AvatarRenderer:
    """The meta-learned generator with an avatar applied: landmark images -> frames, ψ' computed once.

    ``render(landmark_images (N, 3, S, S) in [-1, 1]) -> (N, 3, S, S) in [-1, 1]`` in batches, no grad, on the
    inference path of ``talkinghead.inference.render.FrameRenderer`` run as ``speed`` says (default: the fast path).
    The torch backend of the renderer role (``talkinghead.inference.render.AvatarFrames``).
    """

    backend = "torch"

    def __init__(
        self, avatar: Avatar, meta: MetaLearned, device: str | torch.device = "cpu", speed: Speed | None = None
    ) -> None:
        generator = avatar_generator(avatar, meta)
        self.frames = FrameRenderer(generator, avatar.psi, device, Speed() if speed is None else speed)
        self.generator = self.frames.generator
        self.psi = self.frames.psi
        self.device = self.frames.device
        self.avatar = avatar

    def render(self, landmark_images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        return self.frames.render(landmark_images, batch_size)

    def render_points(self, points: Any, batch_size: int = 16) -> torch.Tensor:
        """(N, 68, 2) pixel landmarks (N, 72, 2 for an ``ibug68+iris`` avatar) -> (N, 3, S, S) frames."""
        require_same_set("the landmarks given", set_of_points(points), "the avatar", self.avatar.landmark_set)
        size = self.avatar.image_size
        return self.render(torch.stack([landmark_image_tensor(p, size) for p in points]), batch_size)
