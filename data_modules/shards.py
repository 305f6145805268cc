"""The on-disk shard format written by ``data_modules.preprocess`` and read by the VoxCeleb DataModules.

A preprocessed set is a folder::

    OUT/
      manifest.json        persons, clips (frame counts, split, shard and video of each), shards, skipped clips
      shard-000000.tar     WebDataset tar shards, ONE sample per clip (a VoxCeleb utterance)
      shard-000001.tar
      report.json          what the last preprocessing run did
      ledger.jsonl         preprocessing progress (one line per committed shard; used to resume)
      config.json          the settings and source list the shards were made with

The manifest's ``videos`` list holds one entry per clip (``video_id`` is the clip id, for VoxCeleb
``person/youtube id/utterance``) and names the video it was cut from (``video``: ``person/youtube id``); a
training unit (one row of D's W table) is one video, or one clip with ``data.unit=utterance`` (``Manifest.units``).
A manifest written before the ``video`` field existed (format ``talkinghead-shards/1``) is re-indexed on load from
its clip ids (``data_modules.sources.video_of``) and marked ``reindexed``; one whose ids do not name a video is
refused for per-video training.  ``landmarks`` names the landmark set of its points (``talkinghead.landmarks.sets``;
a manifest without it holds ``ibug68``).

Inside a shard every clip is one WebDataset sample whose key is the sanitised clip id
(``id00012/abc/00001`` -> ``id00012__abc__00001``) and whose members are::

    <key>.0000.jpg ... <key>.<T-1>.jpg   the T cropped frames, S x S RGB JPEG (fixed quality)
    <key>.landmarks.npy                  float32 (T, 68, 2): iBUG-68 (x, y) pixels in the S x S crop
                                         ((T, 72, 2) with irises: the manifest's ``landmarks`` set)
    <key>.json                           person_id, video_id, frame_indices (source frame numbers), fps,
                                         source (path relative to --src), crop box, face width, split

One sample per video (not per frame) because a training sample needs K+1 frames of the same video; the loader
decodes only the K+1 JPEGs it picks. Tars are written deterministically (sorted members, zero mtime/uid) and
atomically (temporary name, fsync, ``os.replace``): a reader never sees half a shard, and the same input gives
byte-identical shards.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from data_modules.remote import RemoteError, is_remote, join, local_path, open_url, read_bytes
from talkinghead.landmarks.sets import IBUG68, recorded_set

MANIFEST = "manifest.json"
FORMAT = "talkinghead-shards/2"  # /2: every clip names its video; /1 manifests are re-indexed on load
SHARD_NAME = "shard-{:06d}.tar"
TMP_SUFFIX = ".tmp"
JPEG_QUALITY = 95
#: what adds the irises to a shard folder of 68 points (``data_modules.upgrade_irises``); ``{root}``: the folder
UPGRADE_IRISES_COMMAND = "make upgrade-shards SHARDS={root}"


class ManifestError(FileNotFoundError):
    """A data root has no (readable) manifest: it was not made by ``make preprocess``."""


def sample_key(video_id: str) -> str:
    """WebDataset key of a video: no ``/`` or ``.`` (WebDataset splits keys at the first dot)."""
    return video_id.replace("/", "__").replace(".", "_")


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """uint8 ``(H, W, 3)`` RGB -> JPEG bytes (deterministic for a given frame and quality)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality, subsampling=0, optimize=False)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """JPEG bytes -> uint8 ``(H, W, 3)`` RGB."""
    import cv2

    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("corrupt JPEG in shard")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@dataclass
class VideoSample:
    """One preprocessed video: ``frames`` are JPEG bytes (T of them), ``landmarks`` float32 ``(T, 68, 2)``."""

    key: str
    frames: list[bytes]
    landmarks: np.ndarray
    meta: dict[str, Any]

    def members(self) -> list[tuple[str, bytes]]:
        out = [(f"{self.key}.{i:04d}.jpg", jpg) for i, jpg in enumerate(self.frames)]
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(self.landmarks, dtype=np.float32), allow_pickle=False)
        out.append((f"{self.key}.landmarks.npy", buf.getvalue()))
        out.append((f"{self.key}.json", json.dumps(self.meta, sort_keys=True).encode()))
        return out

    def frame(self, i: int) -> np.ndarray:
        """Decoded frame ``i``: uint8 ``(S, S, 3)``."""
        return decode_jpeg(self.frames[i])


def write_shard(path: str | Path, samples: list[VideoSample]) -> int:
    """Write ``samples`` (in the given order) as one tar at ``path``, atomically. Returns bytes written.

    The tar is first written to ``path + ".tmp"``, flushed to disk, then renamed; on any error (e.g. ENOSPC)
    the temporary file is removed and the error re-raised, so ``path`` is either absent or complete.
    """
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        with open(tmp, "wb") as fh:
            with tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                for sample in samples:
                    for name, data in sample.members():
                        info = tarfile.TarInfo(name)
                        info.size = len(data)
                        info.mtime = 0
                        info.mode = 0o444
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        tar.addfile(info, io.BytesIO(data))
            fh.flush()
            os.fsync(fh.fileno())
        size = tmp.stat().st_size
        os.replace(tmp, path)
        return size
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_partial(root: str | Path) -> list[Path]:
    """Delete temporary files a killed run left in ``root`` (never a committed shard); return them."""
    removed = []
    for p in Path(root).glob(f"*{TMP_SUFFIX}"):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _group(fnames_data: Iterator[tuple[str, bytes]]) -> Iterator[VideoSample]:
    from webdataset.tariterators import base_plus_ext

    current: dict[str, Any] | None = None
    for fname, data in fnames_data:
        key, ext = base_plus_ext(fname)
        if key is None:
            continue
        if current is None or current["__key__"] != key:
            if current is not None:
                yield _to_sample(current)
            current = {"__key__": key}
        current[ext] = data
    if current is not None:
        yield _to_sample(current)


def _to_sample(raw: dict[str, Any]) -> VideoSample:
    frames = [
        raw[k] for k in sorted((k for k in raw if k.endswith(".jpg")), key=lambda k: int(k.split(".")[0]))
    ]
    landmarks = np.load(io.BytesIO(raw["landmarks.npy"]), allow_pickle=False)
    meta = json.loads(raw["json"])
    return VideoSample(raw["__key__"], frames, landmarks, meta)


def iter_shard(path: str | Path) -> Iterator[VideoSample]:
    """Stream the videos of one shard in stored order (WebDataset's tar iterator; no random access).

    ``path`` may be a remote URL (``data_modules.remote``): a broken or truncated stream is a ``RemoteError``
    naming the shard."""
    from webdataset.tariterators import tar_file_iterator

    if not is_remote(path):
        with open(path, "rb") as fh:
            yield from _group((s["fname"], s["data"]) for s in tar_file_iterator(fh))
        return

    def members(fh) -> Iterator[tuple[str, bytes]]:  # noqa: ANN001
        it = tar_file_iterator(fh)
        while True:
            try:
                member = next(it)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - tar or transport error mid-stream
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise RemoteError(f"remote shard {path} broke off or is truncated ({reason})") from exc
            yield member["fname"], member["data"]

    with open_url(str(path)) as fh:
        yield from _group(members(fh))


# --------------------------------------------------------------------------------------------------- manifest
@dataclass(frozen=True)
class VideoRecord:
    """One clip of a manifest (a VoxCeleb utterance); ``index`` is its position in the sorted clip list (its W row
    with ``data.unit=utterance``). ``video_id`` is the clip id; ``video`` the video it was cut from
    (``person/youtube id``; derived from the clip id when not given, "" when the id does not name one)."""

    index: int
    video_id: str
    person_id: str
    shard: str
    key: str
    num_frames: int
    split: str | None = None
    video: str = ""

    def __post_init__(self) -> None:
        if not self.video:
            from data_modules.sources import video_of

            object.__setattr__(self, "video", video_of(self.video_id) or "")


UNITS = ("video", "utterance")


class UnitError(ValueError):
    """``data.unit`` is neither ``video`` nor ``utterance``."""


@dataclass(frozen=True)
class VideoUnit:
    """One training unit: a row ``index`` of D's W table and the clips a sample's K+1 frames are drawn from.

    ``unit=video``: every clip of one video (VoxCeleb: the utterances of one YouTube video, in id order),
    ``video_id`` = ``person/youtube id``; ``unit=utterance``: one clip, ``video_id`` = the clip id."""

    index: int
    video_id: str
    person_id: str
    clips: tuple[VideoRecord, ...]

    @property
    def num_frames(self) -> int:
        return sum(c.num_frames for c in self.clips)

    @property
    def split(self) -> str | None:
        return self.clips[0].split

    @property
    def shards(self) -> tuple[str, ...]:
        """The shards holding its clips, in clip order (the first is its home shard)."""
        return tuple(dict.fromkeys(c.shard for c in self.clips))

    def locate(self, position: int) -> tuple[VideoRecord, int]:
        """The clip and the frame in it of ``position`` in ``[0, num_frames)`` (the clips' frames end to end)."""
        for c in self.clips:
            if position < c.num_frames:
                return c, position
            position -= c.num_frames
        raise IndexError(f"frame {position} is past the {self.num_frames} frames of {self.video_id}")


@dataclass
class Manifest:
    """The contents of ``manifest.json`` (see module doc). ``root``: a local folder, or a remote root's URL
    (``data_modules.remote``)."""

    root: Path | str
    image_size: int
    videos: list[VideoRecord]
    shards: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)
    backend: str = ""
    complete: bool = True  # False while preprocessing has not finished (or was stopped)
    reindexed: bool = False  # read from a manifest without the ``video`` field: videos derived from the clip ids
    landmarks: str = IBUG68  # the landmark set of the shards' points (talkinghead.landmarks.sets); absent = ibug68

    @property
    def num_clips(self) -> int:
        return len(self.videos)

    @property
    def num_videos(self) -> int:
        """Distinct videos (a clip whose video is unknown counts as its own)."""
        return len({v.video or v.video_id for v in self.videos})

    def units(self, unit: str = "video") -> list[VideoUnit]:
        """The training units of the set, sorted by id, ``index`` = position (see ``VideoUnit``).

        Raises ``UnitError`` for an unknown ``unit``, and ``ManifestError`` (one line naming the manifest and the
        fix) when ``unit="video"`` but some clip's video is unknown."""
        if unit not in UNITS:
            raise UnitError(
                f"data.unit must be one of {', '.join(UNITS)} (a W row per video or per clip), got {unit!r}"
            )
        if unit == "utterance":
            return [VideoUnit(v.index, v.video_id, v.person_id, (v,)) for v in self.videos]
        unknown = [v.video_id for v in self.videos if not v.video]
        if unknown:
            raise ManifestError(
                f"{self.locate(MANIFEST)} predates the per-video field and {len(unknown)} clip ids do not name their "
                f"video (e.g. {unknown[0]!r}): re-run `make preprocess` with the same arguments on {self.root} to "
                "rewrite it, or train with data.unit=utterance (one W row per clip)"
            )
        groups: dict[str, list[VideoRecord]] = {}
        for v in self.videos:
            groups.setdefault(v.video, []).append(v)
        return [
            VideoUnit(i, vid, clips[0].person_id, tuple(clips)) for i, (vid, clips) in enumerate(sorted(groups.items()))
        ]

    @property
    def persons(self) -> list[str]:
        return sorted({v.person_id for v in self.videos})

    def by_id(self) -> dict[str, VideoRecord]:
        return {v.video_id: v for v in self.videos}

    @property
    def remote(self) -> bool:
        return isinstance(self.root, str)

    def locate(self, name: str) -> Path | str:
        """Where file ``name`` of the set is: a local path, or a remote URL."""
        if isinstance(self.root, str):
            from data_modules.remote import join

            return join(self.root, name)
        return self.root / name

    def to_json(self) -> dict[str, Any]:
        persons: dict[str, list[str]] = {}
        for v in self.videos:
            persons.setdefault(v.person_id, []).append(v.video_id)
        return {
            "format": FORMAT,
            "image_size": self.image_size,
            "backend": self.backend,
            "num_clips": self.num_clips,
            "num_videos": self.num_videos,
            "num_frames": sum(v.num_frames for v in self.videos),
            "persons": persons,
            "shards": self.shards,
            "videos": [
                {
                    "video_id": v.video_id,
                    "person_id": v.person_id,
                    "shard": v.shard,
                    "key": v.key,
                    "num_frames": v.num_frames,
                    "split": v.split,
                    "video": v.video,
                }
                for v in self.videos
            ],
            "skipped": self.skipped,
            "complete": self.complete,
            "landmarks": self.landmarks,
        }

    def save(self) -> None:
        path = self.root / MANIFEST
        tmp = path.with_name(path.name + TMP_SUFFIX)
        try:
            tmp.write_text(json.dumps(self.to_json(), indent=1, sort_keys=True))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def load_manifest(root: str | Path) -> Manifest:
    """Read ``root/manifest.json``; raise ``ManifestError`` saying how to make one when it is absent.

    ``root`` may be remote (``data_modules.remote``): then a ``RemoteError`` says why it cannot be fetched."""
    if is_remote(root):
        url = join(str(root), MANIFEST)
        try:
            return _parse_manifest(json.loads(read_bytes(url)), str(root))
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"{url} is unreadable ({e}): is {root} a shard folder made by `make preprocess`?") from e
    root = local_path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise ManifestError(
            f"data root {root} does not exist: run `make preprocess SRC=<VoxCeleb mp4 folder> "
            f"OUT={root}` first"
        )
    if not path.is_file():
        raise ManifestError(
            f"{root} has no {MANIFEST}: it is not a preprocessed shard folder. Run `make preprocess "
            f"SRC=<VoxCeleb mp4 folder> OUT={root}` (re-running it finishes an interrupted run)"
        )
    try:
        return _parse_manifest(json.loads(path.read_text()), root)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ManifestError(f"{path} is unreadable ({e}): re-run `make preprocess` on {root}") from e


def _parse_manifest(data: dict[str, Any], root: Path | str) -> Manifest:
    videos = [
        VideoRecord(i, v["video_id"], v["person_id"], v["shard"], v["key"], int(v["num_frames"]), v.get("split"),
                    v.get("video") or "")
        for i, v in enumerate(data["videos"])
    ]
    reindexed = any("video" not in v for v in data["videos"])  # written before the field: derived from the ids
    return Manifest(
        root,
        int(data["image_size"]),
        videos,
        list(data["shards"]),
        list(data.get("skipped", [])),
        data.get("backend", ""),
        bool(data.get("complete", True)),
        reindexed,
        recorded_set(data),
    )


class ShardReader:
    """Random access to single videos of a shard folder via the manifest (map-style, for
    val/test/fine-tuning).

    Keeps one open ``tarfile`` index per shard it touched. Shards of a remote root are fetched whole into the
    local cache first (``data_modules.remote.fetch_shard``).
    """

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._records = manifest.by_id()
        self._index: dict[str, dict[str, tarfile.TarInfo]] = {}

    def _path(self, shard: str) -> Path:
        if self.manifest.remote:
            from data_modules.remote import fetch_shard

            return fetch_shard(str(self.manifest.root), shard)
        return Path(self.manifest.root) / shard

    def _members(self, shard: str) -> dict[str, tarfile.TarInfo]:
        if shard not in self._index:
            with tarfile.open(self._path(shard), "r") as tar:
                self._index[shard] = {m.name: m for m in tar.getmembers()}
        return self._index[shard]

    def read(self, video_id: str) -> VideoSample:
        """All frames (JPEG bytes), landmarks and metadata of ``video_id``."""
        if video_id not in self._records:
            raise KeyError(f"video {video_id!r} is not in {self.manifest.locate(MANIFEST)}")
        rec = self._records[video_id]
        members = self._members(rec.shard)
        raw: dict[str, Any] = {"__key__": rec.key}
        with open(self._path(rec.shard), "rb") as fh:
            for name, info in members.items():
                if name.startswith(rec.key + "."):
                    fh.seek(info.offset_data)
                    raw[name[len(rec.key) + 1 :]] = fh.read(info.size)
        return _to_sample(raw)
