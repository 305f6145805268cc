"""Sources of talking-head video on disk: find the clips of a layout, and decode their frames.

Four layouts are recognised (``discover`` picks one, or is told which):

``voxceleb``
    VoxCeleb1/2 mp4 release: ``<person id>/<video id>/<utterance>.mp4``
    (e.g. ``dev/mp4/id00012/abc/00001.mp4``). The person directory must look like a VoxCeleb id
    (``id`` + digits). A ``test`` directory above the person marks the clip as belonging to the official
    test split, ``dev`` as train.
``video-preprocessing``
    256x256 clips of the AliaksandrSiarohin ``video-preprocessing`` scripts:
    ``train|test/<person>#<video>#<start>#<end>.mp4`` or a folder of PNG frames of that name per clip.
``images``
    a plain folder of images of one person (a user's own person); one "video" of all images in name order.
``video``
    one video file of one person.

A *clip* is what preprocessing crops as one piece (one crop box, one sample of a shard): a VoxCeleb utterance,
one video-preprocessing clip, the image folder, or the single file. Its ``video_id`` (the clip id) is unique over a
set: ``<person>/<youtube id>/<utterance>`` for VoxCeleb, ``<person>/<video>#<start>#<end>`` for
video-preprocessing. Every clip also names the *video* it was cut from (``Clip.video``, ``video_of``):
``<person>/<youtube id>`` (VoxCeleb), ``<person>/<video>`` (video-preprocessing), ``<name>/<name>`` (a folder or a
file). The paper's W_i is one row per video: the VoxCeleb DataModules group a video's clips into one training unit
(``data.unit=video``) unless told to keep clips apart (``data.unit=utterance``).

Decoding uses PyAV (FFmpeg bindings) through the bounded decoder ``talkinghead.decode``; nothing shells out.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import talkinghead.decode as decode
from talkinghead.decode import DecodeBoundError, DecodeError, count_frames, even_indices, scaled_size  # noqa: F401

#: The one list of the file suffixes read as a video / an image, everywhere (data, shots, the page).
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
LAYOUTS = ("auto", "voxceleb", "video-preprocessing", "images", "video")

_VOX_PERSON = re.compile(r"^id\d+$")
_VP_NAME = re.compile(r"^([^#/]+)#([^#/]+)#([^#/]+)#([^#/]+?)(?:\.mp4)?$")


class LayoutError(ValueError):
    """The source folder is not one of the supported layouts (or empty)."""


@dataclass(frozen=True)
class Clip:
    """One clip of a source tree.

    ``path`` is a video file, or a folder of frames (``is_frame_folder``), or a tuple of image files
    (``images``). ``split`` is ``"train"``, ``"test"`` or ``None`` (the layout does not say).
    """

    video_id: str
    person_id: str
    path: Path
    split: str | None = None
    images: tuple[Path, ...] = ()

    @property
    def is_frame_folder(self) -> bool:
        return bool(self.images)

    @property
    def video(self) -> str:
        """The video this clip was cut from (``person/youtube id`` for VoxCeleb), see ``video_of``."""
        return video_of(self.video_id) or self.video_id


def video_of(clip_id: str) -> str | None:
    """The video of a clip id as ``discover`` writes them, or None when the id does not name one.

    ``id00012/abc/00001`` -> ``id00012/abc``; ``id00012/abc#10#90`` -> ``id00012/abc``; ``me/me/0`` -> ``me/me``.
    """
    parts = str(clip_id).split("/")
    if len(parts) == 3 and all(parts):
        return f"{parts[0]}/{parts[1]}"
    if len(parts) == 2 and all(parts):
        m = re.match(r"^([^#]+)#[^#]+#[^#]+$", parts[1])
        if m:
            return f"{parts[0]}/{m.group(1)}"
    return None


def _sorted_files(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)


def _split_of(parts: tuple[str, ...]) -> str | None:
    for part in reversed(parts):
        low = part.lower()
        if low in ("test", "vox1_test", "vox2_test"):
            return "test"
        if low in ("dev", "train", "vox1_dev", "vox2_dev"):
            return "train"
    return None


def walk_files(root: Path, suffix: str) -> list[Path]:
    """Files under ``root`` whose name ends with ``suffix``, following symlinked folders (large datasets are
    often laid out as links to other disks), each real folder visited once: a link cycle ends the descent
    instead of looping. Paths keep the linked names (``root/dev/mp4/id1/...``), sorted."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link (a cycle or a second link): skip
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirs.sort()
        found += [Path(folder) / f for f in sorted(files) if f.lower().endswith(suffix)]
    return found


def _voxceleb_clips(root: Path) -> list[Clip]:
    clips = []
    for mp4 in walk_files(root, ".mp4"):
        rel = mp4.relative_to(root).parts
        if len(rel) < 3 or not _VOX_PERSON.match(rel[-3]):
            continue
        person, video, utt = rel[-3], rel[-2], Path(rel[-1]).stem
        clips.append(Clip(f"{person}/{video}/{utt}", person, mp4, _split_of(rel[:-3])))
    return clips


def _video_preprocessing_clips(root: Path) -> list[Clip]:
    clips = []
    for split_dir in ("train", "test"):
        base = root / split_dir
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            m = _VP_NAME.match(entry.name)
            if not m:
                continue
            person, video, start, end = m.groups()
            vid = f"{person}/{video}#{start}#{end}"
            if entry.is_dir():
                frames = tuple(_sorted_files(entry, IMAGE_EXTENSIONS))
                if frames:
                    clips.append(Clip(vid, person, entry, split_dir, frames))
            elif entry.suffix.lower() == ".mp4":
                clips.append(Clip(vid, person, entry, split_dir))
    return clips


def detect_layout(src: Path) -> str:
    """Name the layout of ``src`` (see module doc) or raise ``LayoutError`` saying what was expected."""
    src = Path(src)
    if not src.exists():
        raise FileNotFoundError(f"source {src} does not exist")
    if src.is_file():
        if src.suffix.lower() in VIDEO_SUFFIXES:
            return "video"
        raise LayoutError(f"source {src} is a file but not a video ({', '.join(VIDEO_SUFFIXES)})")
    if _video_preprocessing_clips(src):
        return "video-preprocessing"
    if _voxceleb_clips(src):
        return "voxceleb"
    if _sorted_files(src, IMAGE_EXTENSIONS):
        return "images"
    raise LayoutError(
        f"{src} is not a VoxCeleb layout: expected <person id>/<video id>/<utterance>.mp4 with person ids "
        "like id00012 (VoxCeleb1/2 mp4), train|test/<person>#<video>#<start>#<end>.mp4 or frame folders "
        "(video-preprocessing), a folder of images, or one video file"
    )


def discover(src: str | Path, layout: str = "auto") -> list[Clip]:
    """All clips under ``src`` in ``layout``, sorted by ``video_id`` (so shard assignment is reproducible)."""
    src = Path(src)
    if layout not in LAYOUTS:
        raise LayoutError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = detect_layout(src)
    if layout == "video":
        if not src.is_file():
            raise LayoutError(f"layout video needs one video file, got {src}")
        clips = [Clip(f"{src.stem}/{src.stem}/0", src.stem, src)]
    elif layout == "images":
        images = tuple(_sorted_files(src, IMAGE_EXTENSIONS)) if src.is_dir() else ()
        if not images:
            raise LayoutError(f"{src} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        clips = [Clip(f"{src.name}/{src.name}/0", src.name, src, None, images)]
    elif layout == "voxceleb":
        clips = _voxceleb_clips(src)
    else:
        clips = _video_preprocessing_clips(src)
    if not clips:
        raise LayoutError(f"{src} holds no clips in the {layout} layout")
    clips.sort(key=lambda c: c.video_id)
    counts = Counter(c.video_id for c in clips)
    dup = {v for v, n in counts.items() if n > 1}
    if dup:
        raise LayoutError(
            f"{src} has clips with the same id in two places (e.g. {sorted(dup)[0]}): "
            "point --src at one split (e.g. dev/mp4) or at a folder above both without duplicates"
        )
    return clips


#: PyAV ``thread_type`` for decoding ("AUTO": frame + slice threads; None: one thread, as before)
DECODE_THREADS: str | None = "AUTO"


def read_video(
    path: str | Path, count: int = 0, max_side: int = 0
) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Decode ``count`` evenly spaced frames of a video file (all when 0), each scaled down while decoding so that
    its longer side is at most ``max_side`` pixels (0: full size), which bounds memory to count x max_side² x 3:
    ``talkinghead.decode.read_video`` (the bounded decoder: pixels per frame, frames per input, bytes per job).

    Returns ``(frames uint8 (N,H,W,3) RGB, indices int64 (N,) source frame numbers, fps, frames asked for)``.
    Raises ``DecodeError`` with FFmpeg's reason when the file is not a decodable video, ``DecodeBoundError``
    over a bound. A truncated file whose first frames decode returns those frames only (the caller decides
    whether they are enough); the shortfall is visible as fewer frames than asked.
    """
    return decode.read_video(path, count, max_side, threads=DECODE_THREADS)


def read_images(files: tuple[Path, ...] | list[Path], count: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Load ``count`` evenly spaced images of a frame folder as uint8 (N,H,W,3) RGB + their indices (N,), each
    through the bounded decoder (``talkinghead.decode.read_image``; an image over a bound is a
    ``DecodeBoundError``, an unreadable one is skipped).

    Images of another size than the first are resized to it (a user's photos rarely agree).
    """
    from PIL import Image

    idx = even_indices(len(files), count)
    frames: np.ndarray | None = None  # filled in place, charged once to the job's budget
    kept: list[int] = []
    for i in idx:
        try:
            im = decode.read_image(files[int(i)], charge=False)  # the array below is charged
        except decode.DecodeError:
            continue
        if frames is None:
            decode.budget().charge(Path(files[int(i)]).name, len(idx) * im.nbytes,
                                   f"{len(idx)} images of {im.shape[1]}×{im.shape[0]}")
            frames = np.empty((len(idx), *im.shape), np.uint8)
        elif im.shape != frames.shape[1:]:
            im = np.asarray(Image.fromarray(im).resize(frames.shape[2:0:-1], Image.BILINEAR))
        frames[len(kept)] = im
        kept.append(int(i))
    if frames is None:
        raise DecodeError(f"no readable image in {Path(files[0]).parent if files else '?'}")
    return frames[: len(kept)], np.asarray(kept, dtype=np.int64)


def read_clip(clip: Clip, count: int = 0) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Frames of one clip: ``(frames (N,H,W,3) uint8, indices (N,), fps, frames asked for)``."""
    if clip.is_frame_folder:
        frames, idx = read_images(clip.images, count)
        asked = len(even_indices(len(clip.images), count))
        return frames, idx, 25.0, asked
    return read_video(clip.path, count)
