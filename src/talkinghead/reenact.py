"""``talkinghead reenact``: drive an avatar with the landmarks of a driver video and write an mp4.

Per driver frame: landmarks (detected in a real video, or exact for a synthetic id) -> optionally adapted to the
avatar's face shape (``talkinghead.landmarks.adapt``) -> landmark image -> G(y; ψ') -> frame.  ψ' is the avatar's
stored vector, so no embedder or projection runs per frame; frames are rendered in batches.  Frames where the
detector finds no face keep the last good landmarks (and are counted).  The video is written with PyAV (H.264,
yuv420p) to a temporary name and renamed when complete.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from talkinghead.avatar import (
    AvatarRenderer,
    atomic_path,
    load_avatar,
    load_meta_learned,
    resolve_checkpoint,
)
from talkinghead.errors import TalkingHeadError
from talkinghead.landmarks.adapt import ADAPT_MODES, adapt_landmarks, neutral_index, should_adapt


class ReenactError(TalkingHeadError, ValueError):
    """Bad reenactment arguments."""


# ------------------------------------------------------------------------------------------------ video
def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 25.0) -> Path:
    """uint8 (H, W, 3) RGB frames -> H.264 mp4 (yuv420p), written atomically; returns ``path``.

    Odd sizes are padded by one black pixel (yuv420p needs even sides).  No frame -> ReenactError, no file.
    """
    import av
    from fractions import Fraction

    path = Path(path)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with atomic_path(path) as tmp:
        n = 0
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = None
            for frame in frames:
                h, w = frame.shape[:2]
                if stream is None:
                    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height = w + w % 2, h + h % 2
                    stream.pix_fmt = "yuv420p"
                    if codec == "libx264":
                        stream.options = {"crf": "18", "preset": "medium"}
                if (h % 2) or (w % 2):
                    frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                for pkt in stream.encode(vf):
                    container.mux(pkt)
                n += 1
            if stream is None:
                raise ReenactError(f"no frame to write to {path}")
            for pkt in stream.encode():
                container.mux(pkt)
    return path


def side_by_side_frames(
    driver: torch.Tensor, landmark_images: torch.Tensor, result: torch.Tensor
) -> Iterator[np.ndarray]:
    """(N, 3, S, S) x 3 in [-1, 1] -> N frames uint8 (S, 3S, 3): driver | landmark image | result."""
    from talkinghead.visualize import to_uint8

    for d, y, r in zip(driver, landmark_images, result):
        yield np.concatenate([to_uint8(d), to_uint8(y), to_uint8(r)], axis=1)


# ------------------------------------------------------------------------------------------------ driver
@dataclass
class Driver:
    """Driver frames cropped to the avatar's size: ``frames`` (N, 3, S, S) in [-1, 1], ``landmarks`` (N, 68, 2)."""

    frames: torch.Tensor
    landmarks: np.ndarray
    person_id: str | None
    fps: float
    missing: int
    source: str


def load_driver(
    driver: str,
    data_config: dict[str, Any],
    size: int,
    *,
    detector: Any = "auto",
    max_frames: int = 0,
    synthetic_frames: int = 64,
    data_root: str | None = None,
    landmarks: str = "track",
) -> Driver:
    """A real video / image folder (landmarks detected, faceless frames hold the last good landmarks), or an
    id of the avatar's data (synthetic population or shard folder)."""
    from talkinghead import shots

    path = Path(driver).expanduser()
    if path.exists():
        if isinstance(detector, str):
            detector = shots.make_landmark_detector(detector, landmarks)
        frames, fps = shots.read_user_frames(path, max_frames)
        crops, points, found = shots.crop_faces(frames, detector, size, hold=True, source=str(path))
        sample = shots.to_sample(crops, points, size)
        return Driver(sample["frames"], points, None, fps, int((~found).sum()), str(path))
    person = shots.resolve(
        driver, data_config, size, data_root=data_root, synthetic_video_length=synthetic_frames
    )
    count = person.num_frames if not max_frames else min(max_frames, person.num_frames)
    sample = person.load(list(range(count)))
    return Driver(sample["frames"], sample["landmarks"].numpy(), person.person_id, 10.0, 0, driver)


# ------------------------------------------------------------------------------------------------ the stage
def reenact_main(
    avatar: str | Path,
    driver: str,
    out: str | Path,
    side_by_side: bool = False,
    adapt: str = "auto",
    *,
    ckpt: str | None = None,
    detector: Any = "auto",
    reference: str = "neutral",
    batch_size: int = 16,
    max_frames: int = 0,
    synthetic_frames: int = 64,
    fps: float | None = None,
    data_root: str | None = None,
    runs_dir: str = "runs",
    progress: bool = True,
    wandb: bool = False,
    device: str = "auto",
    speed: str = "fast",
    landmarks: str = "track",
    smooth: str = "on",
) -> Path:
    """Render ``avatar`` driven by ``driver`` into ``out`` (mp4).  Returns ``out``.

    ``adapt``: ``auto`` (adapt the driver's landmarks to the avatar's face shape unless both are known to be the
    same person), ``on`` or ``off`` (raw landmarks, the paper's behaviour).  ``reference``: the driver frame that
    is aligned with the avatar's reference frame (motion is measured from it): ``neutral`` (most upright, frontal,
    mouth-closed frame) or ``first``.  ``speed``: ``fast`` or ``plain`` (``experiments/speed/<speed>.yaml``).
    ``landmarks``: ``track`` or ``detect`` (``talkinghead.landmarks.track``); ``smooth``: ``on`` (One-Euro filter
    over a real driver's landmarks, ``talkinghead.landmarks.smooth``) or ``off``.
    """
    from tqdm.auto import tqdm

    from talkinghead.finetune import pick_device

    if adapt not in ADAPT_MODES:
        raise ReenactError(f"--adapt must be one of {', '.join(ADAPT_MODES)}, got {adapt!r}")
    if speed not in ("fast", "plain"):
        raise ReenactError(f"--speed must be fast or plain, got {speed!r}")
    if batch_size < 1:
        raise ReenactError(f"--batch-size must be >= 1, got {batch_size}")
    if reference not in ("first", "neutral"):
        raise ReenactError(f"--reference must be first or neutral, got {reference!r}")
    if smooth not in ("on", "off"):
        raise ReenactError(f"--smooth must be on or off, got {smooth!r}")
    out = Path(out)
    if out.suffix.lower() != ".mp4":
        raise ReenactError(f"OUT must be an .mp4 file, got {out}")
    av_ = load_avatar(avatar)
    if ckpt is None and Path(av_.checkpoint).is_file():
        ckpt_path = Path(av_.checkpoint)
    else:
        ckpt_path = resolve_checkpoint(ckpt, runs_dir)
    meta = load_meta_learned(ckpt_path)
    from talkinghead.speed import Speed

    renderer = AvatarRenderer(av_, meta, device=pick_device(device), speed=Speed() if speed == "fast" else Speed.plain())
    size = av_.image_size

    drv = load_driver(
        driver,
        av_.data_config,
        size,
        detector=detector,
        max_frames=max_frames,
        synthetic_frames=synthetic_frames,
        data_root=data_root,
        landmarks=landmarks,
    )
    n = len(drv.landmarks)
    if drv.missing:
        print(
            f"driver: no face in {drv.missing} of {n} frames: held the last good landmarks there",
            file=sys.stderr,
        )
    adapted = should_adapt(adapt, drv.person_id, av_.person_id)
    points = drv.landmarks
    if smooth == "on" and drv.person_id is None:  # detected landmarks jitter; a data id's are exact
        from talkinghead.landmarks.smooth import smooth_landmarks

        points = smooth_landmarks(points, drv.fps)
    if adapted:
        ref = points[0] if reference == "first" else points[neutral_index(points)]
        points = adapt_landmarks(points, av_.reference_landmarks.numpy(), ref)
    mode = "adapted to the avatar's face shape" if adapted else "raw driver landmarks"
    print(f"reenacting {av_.source} ({av_.mode}, T={av_.T}) with {drv.source}: {n} frames, {mode}")

    from talkinghead.landmarks.draw import landmark_image_tensor

    def frames() -> Iterator[np.ndarray]:
        from talkinghead.visualize import to_uint8

        bar = tqdm(total=n, desc="reenact", unit="frame", disable=not progress)
        for start in range(0, n, batch_size):
            pts = points[start : start + batch_size]
            y = torch.stack([landmark_image_tensor(p, size) for p in pts])
            x_hat = renderer.render(y, batch_size)
            if side_by_side:
                yield from side_by_side_frames(drv.frames[start : start + batch_size], y, x_hat)
            else:
                yield from to_uint8(x_hat)
            bar.update(len(pts))
        bar.close()

    write_video(out, frames(), fps=fps or drv.fps)
    print(f"wrote {out} ({n} frames, {'driver | landmarks | avatar' if side_by_side else 'avatar'})")
    if wandb:
        log_video_to_wandb(out, name=f"reenact-{Path(str(avatar)).parent.name}", save_dir=out.parent)
    return out


def log_video_to_wandb(video: Path, name: str, save_dir: Path) -> None:
    """Log an mp4 to a new W&B run (offline unless an API key is configured)."""
    import wandb as wb

    from talkinghead.train import wandb_mode

    run = wb.init(
        project="talkinghead",
        name=name,
        dir=str(save_dir),
        job_type="reenact",
        mode="offline" if wandb_mode("auto") else "online",
    )
    run.log({"reenact/video": wb.Video(str(video), format="mp4")})
    run.finish()


def modes_figure(
    avatar: str | Path,
    driver: str,
    out: str | Path,
    *,
    num_frames: int = 6,
    ckpt: str | None = None,
    detector: Any = "auto",
    synthetic_frames: int = 64,
    scale: int = 2,
    runs_dir: str = "runs",
    reference: str = "neutral",
) -> Path:
    """A PNG comparing the two modes on ``num_frames`` driver frames (columns).

    Rows: driver | driver's landmarks (raw) | avatar from raw landmarks | adapted landmarks | avatar from adapted
    landmarks.  ``scale`` enlarges every image (nearest neighbour) for viewing.
    """
    import torch.nn.functional as F

    from talkinghead.landmarks.draw import landmark_image_tensor
    from talkinghead.shots import evenly
    from talkinghead.visualize import make_grid, save_png

    av_ = load_avatar(avatar)
    ckpt_path = (
        Path(av_.checkpoint)
        if ckpt is None and Path(av_.checkpoint).is_file()
        else resolve_checkpoint(ckpt, runs_dir)
    )
    renderer = AvatarRenderer(av_, load_meta_learned(ckpt_path))
    size = av_.image_size
    drv = load_driver(driver, av_.data_config, size, detector=detector, synthetic_frames=synthetic_frames)
    ref = drv.landmarks[0] if reference == "first" else drv.landmarks[neutral_index(drv.landmarks)]
    adapted = adapt_landmarks(drv.landmarks, av_.reference_landmarks.numpy(), ref)
    cols = evenly(len(drv.landmarks), num_frames)
    y_raw = torch.stack([landmark_image_tensor(drv.landmarks[i], size) for i in cols])
    y_ad = torch.stack([landmark_image_tensor(adapted[i], size) for i in cols])
    rows = [drv.frames[cols], y_raw, renderer.render(y_raw), y_ad, renderer.render(y_ad)]
    if scale > 1:
        rows = [F.interpolate(r, scale_factor=scale, mode="nearest") for r in rows]
    return save_png(make_grid([list(r) for r in rows]), out)
