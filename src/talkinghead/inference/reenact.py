"""Reenactment: drive an avatar with the landmarks of a driver video (the ``reenact`` command and the demo page
run it through ``talkinghead.api.drive``).

Per driver frame: landmarks (detected in a real video, or exact for a synthetic id) -> optionally adapted to the
avatar's face shape (``talkinghead.landmarks.adapt``) -> landmark image -> G(y; ψ') -> frame.  ψ' is the avatar's
stored vector, so no embedder or projection runs per frame; frames are rendered in batches.  Frames where the
detector finds no face keep the last good landmarks (and are counted).  The video is written with PyAV (H.264,
yuv420p) to a temporary name and renamed when complete (``talkinghead.video``).

The steps, one function each: :func:`load_driver` (frames + raw landmarks) -> :func:`driver_points` (the landmarks
the avatar follows, per frame) -> :func:`render_frames` (landmark images -> avatar frames, in batches).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_modules.persons import SYNTHETIC_VIDEO_LENGTH
from talkinghead.inference import shots
from talkinghead.inference.avatar import Avatar, AvatarRenderer, load_avatar, load_meta_learned, resolve_checkpoint
from talkinghead.errors import TalkingHeadError
from talkinghead.inference.export import BACKENDS
from talkinghead.landmarks.adapt import ADAPT_MODES, adapt_landmarks, neutral_index, should_adapt
from talkinghead.landmarks.draw import landmark_image_tensor
from talkinghead.landmarks.track import LANDMARK_MODES
from talkinghead.landmarks.smooth import smooth_landmarks
from talkinghead.landmarks.sets import recorded_set, require_same_set, set_of_points
from talkinghead.inference.shots import evenly
from talkinghead.video import side_by_side_frames, write_video
from talkinghead.visualize import from_uint8, make_grid, save_png, to_uint8

__all__ = [
    "ADAPT_MODES", "DriveOptions", "Driver", "ReenactError", "driver_points", "load_driver", "modes_figure",
    "render_frames", "side_by_side_frames", "write_video",
]


class ReenactError(TalkingHeadError, ValueError):
    """Bad reenactment arguments."""


# ------------------------------------------------------------------------------------------------ driver
@dataclass
class Driver:
    """A driver clip: ``landmarks`` (N, 68, 2) (N, 72, 2 for ``ibug68+iris``) in pixels of its face crop at the
    avatar's size, and ``frames`` (N, 3, S, S) in [-1, 1], those crops, made on first use (only side-by-side
    output and figures show them)."""

    crops: Callable[[], torch.Tensor] = field(repr=False)
    landmarks: np.ndarray
    person_id: str | None
    fps: float
    missing: int
    source: str

    @functools.cached_property
    def frames(self) -> torch.Tensor:
        return self.crops()


def load_driver(
    driver: str,
    data_config: dict[str, Any],
    size: int,
    *,
    detector: Any = "auto",
    max_frames: int = 0,
    synthetic_frames: int = SYNTHETIC_VIDEO_LENGTH,
    data_root: str | None = None,
    landmarks: str = "track",
    max_side: int = 0,
    landmark_set: str | None = None,
) -> Driver:
    """A real video / image folder (landmarks detected, faceless frames hold the last good landmarks), or an
    id of the avatar's data (synthetic population or shard folder).  ``max_side``: a video's frames are scaled
    down while decoding to at most that many pixels a side (0 = full size).  ``landmark_set``: the points a real
    video gets (the avatar's; default: the set ``data_config`` records): ``ibug68+iris`` locates the irises."""
    path = Path(driver).expanduser()
    if path.exists():
        frames, fps = shots.read_user_frames(path, max_frames, max_side)  # decoded (bounded) before the detector loads
        if isinstance(detector, str):
            detector = shots.make_landmark_detector(detector, landmarks)
        track = shots.track_faces(frames, detector, size, source=str(path),
                                  landmark_set=recorded_set(data_config) if landmark_set is None else landmark_set)

        def crops() -> torch.Tensor:
            return from_uint8(track.crops(frames))

        return Driver(crops, track.landmarks, None, fps, int((~track.found).sum()), str(path))
    person = shots.resolve(
        driver, data_config, size, data_root=data_root, synthetic_video_length=synthetic_frames
    )
    count = person.num_frames if not max_frames else min(max_frames, person.num_frames)
    sample = person.load(list(range(count)))
    return Driver(lambda: sample["frames"], sample["landmarks"].numpy(), person.person_id, 10.0, 0, driver)


# ------------------------------------------------------------------------------------------------ the steps
#: what :class:`DriveOptions` takes, field by field (its one-line errors name them)
REFERENCES = ("neutral", "first")
SMOOTH_MODES = ("on", "off")
SPEEDS = ("fast", "plain")


@dataclass(frozen=True)
class DriveOptions:
    """How a driver drives an avatar: one set of options for ``make reenact`` (``talkinghead reenact``), the page's
    Drive and Live tabs and ``make live``, checked when made (one line naming the field).

    - ``adapt``: ``auto`` (adapt the driver's landmarks to the avatar's face shape unless both are known to be one
      person), ``on``, or ``off`` (raw landmarks, the paper); ``reference``: the driver frame whose landmarks
      adaptation measures motion from, ``neutral`` or ``first``;
    - ``landmarks``: ``track`` (detect on key frames, follow between: ``talkinghead.landmarks.track``) or
      ``detect`` (every frame); ``smooth``: ``on`` (One-Euro filter over a real driver's landmarks) or ``off``;
    - ``side_by_side``: driver | landmarks | avatar; ``full``: the avatar's source frame at its original size with
      the rendered face pasted back (``talkinghead.inference.paste``); not both;
    - ``backend``: ``torch``, ``onnx`` (onnxruntime: the file ``onnx``, else ``avatar.onnx`` beside the avatar, else
      an in-memory export) or ``auto`` (onnx where it is faster: ``talkinghead.inference.export.avatar_renderer``);
    - ``batch_size`` frames per batch, ``device`` (auto: cuda when present), ``speed`` (``fast``: bf16 where
      native, channels-last; ``plain``: the fp32 reference);
    - ``max_frames`` driver frames used, evenly spaced (0: all); ``max_side``: driver frames scaled down while
      decoding to at most that many pixels a side (0: full size); ``synthetic_frames``: the length of a synthetic
      driver id; ``fps``: the output's frame rate (None: the driver's).
    """

    adapt: str = "auto"
    reference: str = "neutral"
    landmarks: str = "track"
    smooth: str = "on"
    side_by_side: bool = False
    full: bool = False
    backend: str = "auto"
    onnx: str | Path | None = None
    batch_size: int = 16
    device: str = "auto"
    speed: str = "fast"
    max_frames: int = 0
    max_side: int = 0
    synthetic_frames: int = SYNTHETIC_VIDEO_LENGTH
    fps: float | None = None

    def __post_init__(self) -> None:
        for name, allowed in (("adapt", ADAPT_MODES), ("reference", REFERENCES), ("landmarks", LANDMARK_MODES),
                              ("smooth", SMOOTH_MODES), ("backend", BACKENDS), ("speed", SPEEDS)):
            if getattr(self, name) not in allowed:
                raise ReenactError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}",
                                   option=name)
        if self.batch_size < 1:
            raise ReenactError(f"batch_size must be >= 1, got {self.batch_size}", option="batch_size")
        for name in ("max_frames", "max_side", "synthetic_frames"):
            if getattr(self, name) < 0:
                raise ReenactError(f"{name} must be >= 0, got {getattr(self, name)}", option=name)
        if self.full and self.side_by_side:
            raise ReenactError("full and side_by_side cannot be combined: full-frame output is the avatar's frame "
                               "alone", option="full")

    @classmethod
    def of(cls, options: DriveOptions | None = None, **changes: Any) -> DriveOptions:
        """``options`` (default: the defaults) with some fields changed; an unknown field is one line with the
        closest name."""
        known = [f.name for f in fields(cls)]
        for key in changes:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                raise ReenactError(f"no drive option {key!r}" + (f": did you mean {close[0]}?" if close else
                                                                  f" (options: {', '.join(known)})"))
        return replace(options or cls(), **changes)


def check_driver_set(drv: Driver, avatar: Avatar) -> None:
    """One line naming both landmark sets when the driver's points are not of the avatar's set."""
    require_same_set(f"the driver {drv.source}", set_of_points(drv.landmarks), "the avatar", avatar.landmark_set)


def driver_points(
    drv: Driver, avatar: Avatar, adapt: str = "auto", reference: str = "neutral", smooth: str = "on"
) -> tuple[np.ndarray, bool]:
    """The per-frame landmark step: the driver's (N, 68, 2) landmarks -> the ones the avatar follows.

    ``smooth="on"`` runs a One-Euro filter over a real driver's landmarks (``talkinghead.landmarks.smooth``); a
    data id's landmarks are exact and stay as they are.
    With adaptation (``adapt`` on, or auto and driver/avatar not known to be one person) the driver's motion,
    measured from its ``reference`` frame (``neutral`` or ``first``), is moved onto the avatar's face shape.
    Returns ``(points (N, 68, 2), adapted)``.
    """
    check_driver_set(drv, avatar)
    adapted = should_adapt(adapt, drv.person_id, avatar.person_id)
    points = drv.landmarks
    if smooth == "on" and drv.person_id is None:  # detected landmarks jitter; a data id's are exact
        points = smooth_landmarks(points, drv.fps)
    if adapted:
        ref = points[0] if reference == "first" else points[neutral_index(points)]
        points = adapt_landmarks(points, avatar.reference_landmarks.numpy(), ref)
    return points, adapted


def render_frames(
    renderer: AvatarRenderer,
    points: np.ndarray,
    driver_frames: torch.Tensor | None = None,
    *,
    batch_size: int = 16,
    on_frames: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """(N, 68, 2) landmarks -> N uint8 frames (S, S, 3), or (S, 3S, 3) driver | landmarks | avatar when
    ``driver_frames`` (N, 3, S, S) is given.  ``on_frames(k)`` after each batch of k frames."""
    size = renderer.avatar.image_size
    for start in range(0, len(points), batch_size):
        pts = points[start : start + batch_size]
        y = torch.stack([landmark_image_tensor(p, size) for p in pts])
        x_hat = renderer.render(y, batch_size)
        if driver_frames is not None:
            yield from side_by_side_frames(driver_frames[start : start + batch_size], y, x_hat)
        else:
            yield from to_uint8(x_hat)
        if on_frames is not None:
            on_frames(len(pts))


def modes_figure(
    avatar: str | Path,
    driver: str,
    out: str | Path,
    *,
    num_frames: int = 6,
    ckpt: str | None = None,
    detector: Any = "auto",
    synthetic_frames: int = SYNTHETIC_VIDEO_LENGTH,
    scale: int = 2,
    runs_dir: str = "runs",
    reference: str = "neutral",
) -> Path:
    """A PNG comparing the two modes on ``num_frames`` driver frames (columns).

    Rows: driver | driver's landmarks (raw) | avatar from raw landmarks | adapted landmarks | avatar from adapted
    landmarks.  ``scale`` enlarges every image (nearest neighbour) for viewing.
    """
    import torch.nn.functional as F

    av_ = load_avatar(avatar)
    ckpt_path = (
        Path(av_.checkpoint)
        if ckpt is None and Path(av_.checkpoint).is_file()
        else resolve_checkpoint(ckpt, runs_dir)
    )
    renderer = AvatarRenderer(av_, load_meta_learned(ckpt_path))
    size = av_.image_size
    drv = load_driver(driver, av_.data_config, size, detector=detector, synthetic_frames=synthetic_frames)
    check_driver_set(drv, av_)
    ref = drv.landmarks[0] if reference == "first" else drv.landmarks[neutral_index(drv.landmarks)]
    adapted = adapt_landmarks(drv.landmarks, av_.reference_landmarks.numpy(), ref)
    cols = evenly(len(drv.landmarks), num_frames)
    y_raw = torch.stack([landmark_image_tensor(drv.landmarks[i], size) for i in cols])
    y_ad = torch.stack([landmark_image_tensor(adapted[i], size) for i in cols])
    rows = [drv.frames[cols], y_raw, renderer.render(y_raw), y_ad, renderer.render(y_ad)]
    if scale > 1:
        rows = [F.interpolate(r, scale_factor=scale, mode="nearest") for r in rows]
    return save_png(make_grid([list(r) for r in rows]), out)
