"""Where the frames of one person come from, for fine-tuning, reenactment and evaluation.

An *id* names a person or one video of them:

* a synthetic video or person id of the embedded population (``syn0035/v00``, ``syn0035``), rendered on the fly
  with the data config the meta-learned model was trained with;
* a person, video or clip id of a preprocessed shard folder (``id90007``, ``id90007/abc`` = all utterances of
  that video, ``id90007/abc/00001`` = one utterance), read via its ``manifest.json``;
* a path to the user's own video file or folder of images: frames are decoded, landmarks detected, and the face
  cropped as ``make preprocess`` does;
* one photo (the paper's one-shot case, paintings included) or a list of photos of one person: a single image
  file, several separated by spaces or commas (``"a.jpg b.png"``), a glob (``"photos/*.jpg"``) or a list
  (``[a.jpg, b.jpg]``). Each photo gets its own face crop (photos do not share a camera as video frames do).

A person id pools the frames of all of that person's videos, a video id those of all its utterances (in id order,
so the first half of its frames comes from its first utterances).  ``PersonFrames`` holds the addressable frames
(``positions`` 0..N-1) and loads any subset of them at the model's resolution.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_modules.persons import SYNTHETIC_VIDEO_LENGTH, open_source
from data_modules.preprocess import PreprocessConfig
from data_modules.sources import (
    IMAGE_EXTENSIONS,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    DecodeError,
    count_frames,
    read_images,
    read_video,
)
from talkinghead import decode
from talkinghead.crop import crop_frame, face_track, landmarks_to_crop
from talkinghead.errors import TalkingHeadError
from talkinghead.landmarks.detectors import make_detector
from talkinghead.landmarks.draw import landmark_image_tensor
from talkinghead.landmarks.iris import points_with_irises
from talkinghead.landmarks.sets import IBUG68, IBUG68_IRIS, absent_note, check_set, num_points, recorded_set
from talkinghead.landmarks.track import LANDMARK_MODES, make_landmarker
from talkinghead.visualize import from_uint8, to_uint8


class UnknownIdError(TalkingHeadError, KeyError):
    """An id that is neither a known person/video nor an existing path."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class NotEnoughFramesError(TalkingHeadError, ValueError):
    """More frames were asked for than the person's videos hold."""


class NoFaceError(TalkingHeadError, RuntimeError):
    """No usable face in a user's video or images."""


class DetectorError(TalkingHeadError, RuntimeError):
    """The landmark detector asked for cannot run here."""


def make_landmark_detector(backend: str = "auto", landmarks: str = "track") -> Any:
    """``talkinghead.landmarks.detectors.make_detector`` with its errors as one-line user errors.

    ``landmarks``: ``track`` (detect on key frames, track in between: ``talkinghead.landmarks.track``) or
    ``detect`` (the detector on every frame)."""
    if landmarks not in LANDMARK_MODES:
        raise DetectorError(f"landmarks must be one of {', '.join(LANDMARK_MODES)}, got {landmarks!r}",
                            option="landmarks")
    try:
        return make_landmarker(make_detector(backend), landmarks)
    except (RuntimeError, ValueError) as exc:
        raise DetectorError(f"landmark detector {backend!r}: {exc}") from exc


@dataclass
class PersonFrames:
    """The frames available for one id.

    ``load(positions)`` -> ``{"frames", "landmark_images": (N, 3, S, S) in [-1, 1], "landmarks": (N, 68, 2)}``.
    """

    source: str
    person_id: str | None
    video_ids: list[str]
    num_frames: int
    loader: Callable[[Sequence[int]], dict[str, torch.Tensor]]
    notes: list[str] = field(default_factory=list)
    #: position -> (the whole frame the crop was cut from, uint8 (H, W, 3); its crop box (x0, y0, side));
    #: None: the frames are crops already (data ids), so the crop is its own source frame
    full_frame: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = field(default=None, repr=False)

    def load(self, positions: Sequence[int]) -> dict[str, torch.Tensor]:
        bad = [p for p in positions if not 0 <= int(p) < self.num_frames]
        if bad:
            raise IndexError(f"frame positions {bad[:5]} outside [0, {self.num_frames}) of {self.source}")
        return self.loader([int(p) for p in positions])

    def source_frame(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """The frame the crop at ``position`` was cut from and its crop box: ``(uint8 (H, W, 3), (x0, y0, side))``
        (what full-frame output pastes the rendered face back into).  A data id's frame is its crop, box
        ``(0, 0, S)``."""
        if self.full_frame is not None:
            frame, box = self.full_frame(int(position))
            return np.ascontiguousarray(frame), np.asarray(box, dtype=np.float64)

        crop = to_uint8(self.load([int(position)])["frames"][0])
        return crop, np.array([0.0, 0.0, float(crop.shape[0])])

    def require(self, count: int, what: str = "T") -> None:
        if count < 1:
            raise NotEnoughFramesError(f"{what} must be >= 1, got {count}")
        if count > self.num_frames:
            raise NotEnoughFramesError(
                f"{what}={count} needs {count} frames but {self.source} has {self.num_frames}"
                f" ({len(self.video_ids)} video(s)): lower {what}"
            )


def evenly(num: int, count: int, offset: int = 0) -> list[int]:
    """``count`` positions spread evenly over ``[offset, offset + num)`` (distinct; all when count >= num)."""
    if count >= num:
        return list(range(offset, offset + num))
    return [offset + int(i) for i in np.round(np.linspace(0, num - 1, count)).astype(int)]


# ------------------------------------------------------------------------------------------ the model's data
def data_source(data_cfg: Mapping[str, Any], image_size: int, data_root: str | None = None, id_: str = "") -> Any:
    """The meta-learned model's DataModule, asked through the person API (``data_modules.persons``): which ids
    it knows, which are held out, one id's frames.  Its errors become one-line ``UnknownIdError``s."""
    what = f"look up {id_!r}" if id_ else "list the held-out videos"
    try:
        return open_source(data_cfg, image_size, data_root or None)
    except (ValueError, FileNotFoundError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UnknownIdError(f"cannot {what}: {first}; give data_root=<shard folder> if the data moved") from exc


# ------------------------------------------------------------------------------------------------ user files
def ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's reason without the file path it quotes (the caller names the file as the user knows it)."""
    text = str(getattr(exc, "strerror", None) or exc).strip().splitlines()
    text = text[0] if text else type(exc).__name__
    text = re.sub(r"^cannot decode [^:]*: ", "", text)
    text = re.sub(r"^\[Errno -?\d+\] ", "", text)
    return re.sub(r":\s*'[^']*'?$", "", text).strip() or type(exc).__name__


@dataclass(frozen=True)
class VideoInfo:
    """A video file's header: ``frames`` (counted from the packets when the header has none), ``fps``,
    ``width`` x ``height`` pixels of a stored frame."""

    frames: int
    fps: float
    width: int
    height: int


def probe_video(path: Path) -> VideoInfo:
    """:class:`VideoInfo` of a video file without decoding its frames; ``NoFaceError`` naming the file when it is
    no readable video."""
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise NoFaceError(f"cannot read {path.name}: it holds no video stream")
            s = c.streams.video[0]
            fps = float(s.average_rate or s.guessed_rate or 25.0)
            return VideoInfo(count_frames(c), fps, int(s.codec_context.width), int(s.codec_context.height))
    except NoFaceError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise NoFaceError(f"cannot read {path.name}: not a readable video ({ffmpeg_reason(exc)})") from exc


def read_user_frames(path: Path, max_frames: int = 0, max_side: int = 0) -> tuple[np.ndarray, float]:
    """A video file or a folder of images -> (uint8 (N, H, W, 3) RGB, fps); ``max_frames`` evenly (0 = all);
    video frames scaled down while decoding to at most ``max_side`` pixels a side (0 = full size)."""
    try:
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise NoFaceError(f"{path} holds no image ({', '.join(IMAGE_EXTENSIONS)}) and is not a video")
            frames, _ = read_images(files, max_frames)
            return frames, 25.0
        frames, _, fps, _ = read_video(path, max_frames, max_side=max_side)
        return frames, fps
    except DecodeError as exc:
        raise NoFaceError(f"cannot read {path}: not a readable video ({ffmpeg_reason(exc)})") from exc


@dataclass
class FaceTrack:
    """A clip's face track in crop coordinates: ``box`` (x0, y0, side) of the one square crop, ``landmarks``
    float32 (N, 68, 2) (N, 72, 2 for ``ibug68+iris``: NaN rows where an iris is absent) in pixels of the
    ``size``² crop, ``found`` bool (N,) (a face on the track there)."""

    box: np.ndarray
    landmarks: np.ndarray
    found: np.ndarray
    size: int

    def crops(self, frames: np.ndarray, rows: Any = None) -> np.ndarray:
        """uint8 (N, size, size, 3): ``frames`` (the clip's, or ``rows`` of them) cropped and resized."""
        rows = range(len(frames)) if rows is None else rows
        return np.stack([crop_frame(frames[i], self.box, self.size) for i in rows])


def crop_settings(size: int) -> Any:
    """The crop geometry of a user's video or photo (preprocessing's margin, any face size, any share of frames
    with a face): what :func:`track_faces` and live driving (``talkinghead.inference.live``) fit their box with."""
    return PreprocessConfig(size=size, min_face=1, min_detected=0.0, min_frames=1)


def track_faces(
    frames: np.ndarray, detector: Any, size: int, source: str = "video", landmark_set: str = IBUG68
) -> FaceTrack:
    """Detect landmarks, fit one square box around the face track (as preprocessing does), map the landmarks into
    its ``size``² crop.  A frame without an (on-track) face holds the last good landmarks (the first good ones
    before the first detection).  No usable face -> NoFaceError.  ``landmark_set`` ``ibug68+iris``: each frame
    with a face gets its irises from ``talkinghead.landmarks.iris`` (located in the whole frame)."""
    detected = detector.detect(frames)
    track = face_track(detected, crop_settings(size))
    if isinstance(track, str):
        raise NoFaceError(f"no usable face in {source}: {track}")
    box, kept, _ = track
    found = np.zeros(len(frames), dtype=bool)
    found[kept] = True
    irises = check_set(landmark_set) == IBUG68_IRIS

    def crop_points(i: int) -> np.ndarray:
        pts = points_with_irises(frames[i], detected[i]) if irises else detected[i]
        return landmarks_to_crop(pts, box, size)

    points = np.zeros((len(frames), num_points(landmark_set), 2), np.float32)
    for i in kept:  # each found frame's points once (the iris locator runs once a frame)
        points[i] = crop_points(int(i))
    last = points[int(kept[0])]  # frames before the first found one hold its points, later ones the last found
    for i in range(len(frames)):
        if found[i]:
            last = points[i]
        points[i] = last
    return FaceTrack(box, points, found, size)


def crop_faces(
    frames: np.ndarray, detector: Any, size: int, hold: bool = False, source: str = "video",
    landmark_set: str = IBUG68,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`track_faces`, then the crops: ``(crops uint8 (N, size, size, 3), landmarks float32 (N, 68, 2) in
    crop pixels, found bool (N,))``.  With ``hold`` every frame is kept (faceless ones hold the last good
    landmarks); without it only frames with a face are returned."""
    track = track_faces(frames, detector, size, source, landmark_set)
    if hold:
        return track.crops(frames), track.landmarks, track.found
    kept = np.flatnonzero(track.found)
    return track.crops(frames, kept), track.landmarks[kept], track.found


def to_sample(crops: np.ndarray, landmarks: np.ndarray, size: int) -> dict[str, torch.Tensor]:
    """uint8 (N, S, S, 3) crops + (N, 68|72, 2) landmarks -> tensors of the common sample format."""
    frames = from_uint8(crops)
    lms = torch.stack([landmark_image_tensor(p, size) for p in landmarks])
    return {
        "frames": frames,
        "landmark_images": lms,
        "landmarks": torch.from_numpy(landmarks.astype(np.float32)),
    }


def user_frames(
    path: Path, image_size: int, detector: Any, max_frames: int = 0, max_side: int = 0, landmark_set: str = IBUG68
) -> PersonFrames:
    """A user's video or image folder, its face cropped.  ``detector``: a ``LandmarkDetector`` or a backend
    name, loaded once the frames have decoded (a file over a decoding bound is refused first)."""
    frames, _ = read_user_frames(path, max_frames, max_side)
    if isinstance(detector, str):
        detector = make_landmark_detector(detector)
    track = track_faces(frames, detector, image_size, source=str(path), landmark_set=landmark_set)
    found = track.found
    kept = np.flatnonzero(found)
    crops, points = track.crops(frames, kept), track.landmarks[kept]
    sample = to_sample(crops, points, image_size)
    notes = (
        [] if found.all() else [f"no face in {int((~found).sum())} of {len(found)} frames of {path}: skipped"]
    ) + [n for n in [absent_note(points, str(path))] if n]

    def loader(positions: Sequence[int]) -> dict[str, torch.Tensor]:
        return {k: v[list(positions)] for k, v in sample.items()}

    first = frames[kept[0]].copy()  # a video avatar's source frame is its first (the decoded clip is not kept)
    del frames

    def full_frame(position: int) -> tuple[np.ndarray, np.ndarray]:
        if position != 0:
            raise IndexError(f"only the first frame of {path} is kept as a source frame, not frame {position}")
        return first, track.box

    return PersonFrames(str(path), None, [str(path)], len(crops), loader, notes, full_frame)


def read_photo(path: Path, max_side: int = 0) -> np.ndarray:
    """One image file -> uint8 (1, H, W, 3) RGB, scaled down while decoding to at most ``max_side`` pixels a side
    (0 = full size; JPEG decodes at a reduced scale directly) by the bounded decoder (``talkinghead.decode``:
    16-bit images scaled, not clipped; over a bound one line); a clear error naming the file when it is no
    readable image."""
    try:
        return decode.read_image(path, max_side, name=str(path))[None]
    except decode.DecodeError as exc:
        raise NoFaceError(f"cannot read {path}: not a readable image") from exc


def several_faces_note(path: Path, frame: np.ndarray, detector: Any) -> str | None:
    """``"2 faces in x.jpg: took the largest at (x, y, w, h) = (…)"`` when the photo ``frame`` uint8 (H, W, 3) shows
    several faces (the detectors take the largest, by its landmarks' extent); None for one face, or for a detector
    that cannot list faces (one with ``faces``, or a tracker around one, can)."""
    backend = detector if hasattr(detector, "faces") else getattr(detector, "detector", None)
    if backend is None or not hasattr(backend, "faces"):
        return None
    faces = backend.faces(frame[None])[0]
    if len(faces) < 2:
        return None
    areas = [np.ptp(p[:, 0]) * np.ptp(p[:, 1]) for _, p in faces]
    x0, y0, x1, y1 = (float(v) for v in faces[int(np.argmax(areas))][0][:4])
    return (f"{len(faces)} faces in {path}: took the largest at (x, y, w, h) = "
            f"({x0:.0f}, {y0:.0f}, {x1 - x0:.0f}, {y1 - y0:.0f})")


def photo_frames(
    paths: Sequence[Path], image_size: int, detector: Any, max_side: int = 0, landmark_set: str = IBUG68
) -> PersonFrames:
    """Frames of one photo or a list of photos of one person: each photo is cropped around its own face.

    A photo without a face is skipped with a note when others have one; none with a face is a ``NoFaceError``.
    """
    crops, points, notes, origins = [], [], [], []
    for path in paths:
        frames = read_photo(path, max_side)
        if isinstance(detector, str):  # a backend name: loaded once a photo has decoded
            detector = make_landmark_detector(detector)
        try:
            track = track_faces(frames, detector, image_size, source=str(path), landmark_set=landmark_set)
        except NoFaceError as exc:
            if len(paths) == 1:
                raise
            notes.append(f"{exc}: skipped")
            continue
        several = several_faces_note(path, frames[0], detector)
        notes += [several] if several else []
        kept = np.flatnonzero(track.found)
        crops.append(track.crops(frames, kept))
        points.append(track.landmarks[kept])
        origins += [(path, track.box)] * len(kept)
    if not crops:
        raise NoFaceError(f"no usable face in any of the {len(paths)} photos ({paths[0]}, ...)")
    sample = to_sample(np.concatenate(crops), np.concatenate(points), image_size)
    source = str(paths[0]) if len(paths) == 1 else f"{len(paths)} photos ({paths[0]}, ...)"
    notes += [n for n in [absent_note(np.concatenate(points), source)] if n]

    def loader(positions: Sequence[int]) -> dict[str, torch.Tensor]:
        return {k: v[list(positions)] for k, v in sample.items()}

    def full_frame(position: int) -> tuple[np.ndarray, np.ndarray]:
        path, box = origins[position]
        return read_photo(path, max_side)[0], box  # the scale the box was found at

    return PersonFrames(source, None, [str(p) for p in paths], len(sample["frames"]), loader, notes, full_frame)


def photo_list(id_: str | Sequence[str]) -> list[Path] | None:
    """The image files an id names (one photo, ``"a.jpg b.jpg"``, ``"a.jpg,b.jpg"``, a glob, a list), or None
    when it names no image file. Raises ``UnknownIdError`` for a list with a missing or non-image entry."""
    import ast
    import glob

    if isinstance(id_, str):
        text = id_.strip()
        if Path(text).expanduser().is_file():
            return [Path(text).expanduser()] if Path(text).suffix.lower() in IMAGE_SUFFIXES else None
        if text.startswith("[") and text.endswith("]"):  # a Hydra list, or its str()
            try:
                items = [str(x) for x in ast.literal_eval(text)]
            except (ValueError, SyntaxError):
                items = [x.strip(" '\"") for x in text[1:-1].split(",")]
        elif any(ch in text for ch in "*?[") and not Path(text).exists():
            items = sorted(glob.glob(str(Path(text).expanduser())))
            if not items:
                if Path(text).suffix.lower() in IMAGE_SUFFIXES:
                    raise UnknownIdError(f"no file matches {text}")
                return None
        else:
            items = [x for x in re.split(r"[,\s]+", text) if x]
    else:
        items = [str(x) for x in id_]
    if not items or not all(Path(x).suffix.lower() in IMAGE_SUFFIXES for x in items):
        return None
    paths = [Path(x).expanduser() for x in items]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UnknownIdError(f"no such image file: {', '.join(missing[:5])}")
    return paths


# ------------------------------------------------------------------------------------------------ resolve
def looks_like_path(id_: str) -> bool:
    return id_.startswith(("/", "./", "../", "~")) or Path(id_).suffix.lower() in VIDEO_SUFFIXES + IMAGE_SUFFIXES


def resolve(
    id_: str | Sequence[str],
    data_cfg: Mapping[str, Any],
    image_size: int,
    *,
    data_root: str | None = None,
    synthetic_video_length: int = SYNTHETIC_VIDEO_LENGTH,
    detector: Any | None = None,
    detector_backend: str = "auto",
    max_frames: int = 0,
    max_side: int = 0,
    landmark_set: str | None = None,
) -> PersonFrames:
    """The frames of ``id_`` (see the module docstring); ``data_cfg`` is the meta-learned model's data config.
    ``max_side``: a user's video frames and photos are scaled down while decoding to at most that many pixels a
    side (0 = full size).  ``landmark_set``: the points a user's video or photos get (default: the set
    ``data_cfg`` records, ``talkinghead.landmarks.sets``)."""
    landmark_set = recorded_set(data_cfg) if landmark_set is None else check_set(landmark_set)
    photos = photo_list(id_ if not isinstance(id_, str) and isinstance(id_, Sequence) else str(id_))
    if photos:
        return photo_frames(photos, image_size, detector if detector is not None else detector_backend, max_side,
                            landmark_set)
    id_ = str(id_).strip()
    if not id_:
        raise UnknownIdError(
            "id is empty: give a person or video id from the manifest, or a video/folder path"
        )
    path = Path(id_).expanduser()
    if path.exists():
        return user_frames(path, image_size, detector if detector is not None else detector_backend, max_frames,
                           max_side, landmark_set)
    if looks_like_path(id_):
        raise UnknownIdError(f"no such file or folder: {id_}")

    source = data_source(data_cfg, image_size, data_root, id_)
    known = source.known_ids()
    if id_ in known:
        data = source.person_frames(id_, synthetic_video_length)
        return PersonFrames(id_, data.person_id, data.video_ids, data.num_frames, data.loader)
    where = source.where
    close = difflib.get_close_matches(id_, known, n=5, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise UnknownIdError(f"unknown id {id_!r}: not a person or video of {where} nor an existing path{hint}")
