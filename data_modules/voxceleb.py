"""VoxCeleb1/2 DataModules that stream the shards written by ``data_modules.preprocess``.

A training sample is K+1 frames of ONE video with their landmark images and the video's row in D's W table
(``SampleDict``, see ``data_modules/__init__.py``). The unit (``unit``, config ``data.unit``) is, as in the paper
and FSTH, the *video*: for VoxCeleb the YouTube video ``person/youtube id``, whose K+1 frames are drawn uniformly
from the frames of all its utterances (FSTH's ``SampleLoader.list_frames`` over a ``person/youtube id`` folder);
``unit=utterance`` makes every clip its own unit. ``num_videos`` (the size of the W table) is the number of units
of ``manifest.json``; ``video_index`` is a unit's position in the sorted unit list (test videos keep their rows,
unused, so indices never depend on the split). See ``data_modules.shards.VideoUnit``.

Split: by person. Test persons are the union of VoxCeleb's official test persons (VoxCeleb1:
id10270..id10309; VoxCeleb2: the persons whose clips came from its ``test`` folder, as recorded per video
by preprocessing), or ``test_persons`` when given (it replaces them), or else a deterministic
``test_fraction`` of the persons (for small sets such as voxmini).

Streaming (``VoxCelebStream``): the training videos are partitioned across the ``world_size * num_workers``
loader slots of all DDP ranks: whole shards when there are at least as many shards as slots (a video goes with its
first clip's shard; a worker reads the head of the next shard for a video cut at a shard's end), else single
videos. The partition is a seeded permutation that changes every epoch and is the same on every rank, so no
two ranks (or workers) read the same video in an epoch. Every rank yields the same number of samples
(``len(train videos) * samples_per_video // world_size``), so DDP never waits on a rank that ran out.

Augmentation: ``augment`` is a mapping of albumentations transform names to their arguments, applied with
the same random parameters to all K+1 frames of a sample and to their landmarks (keypoints); landmark
images are drawn after it. A horizontal flip also re-indexes the 68 points (left eye <-> right eye, ...),
so that point i keeps its meaning.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

try:
    import pytorch_lightning as pl
except ImportError:  # pragma: no cover
    import lightning.pytorch as pl  # type: ignore[no-redef]

from data_modules.batch import split_batch
from data_modules.persons import SYNTHETIC_VIDEO_LENGTH, PersonData
from data_modules.remote import ShardError, is_remote, local_path
from data_modules.resumable import ResumableStreamLoader
from data_modules.shards import (
    UPGRADE_IRISES_COMMAND,
    Manifest,
    ShardReader,
    VideoRecord,
    VideoSample,
    VideoUnit,
    decode_jpeg,
    iter_shard,
    load_manifest,
)
from talkinghead.landmarks.draw import draw_landmarks
from talkinghead.landmarks.sets import IBUG68_IRIS, IRIS_ROWS, LandmarkSetError, check_set, require_same_set
from talkinghead.visualize import from_uint8, uint8_chw

# iBUG-68 index of each point's mirror image (x -> -x): jaw, brows, nose, eyes, outer and inner lips.
IBUG68_FLIP = np.array(
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30]
    + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46]
    + [39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48]
    + [59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60]
    + [67, 66, 65],
    dtype=np.int64,
)

#: The same for ``ibug68+iris`` points: the two irises (centre, rim rows) swap as well.
IRIS72_FLIP = np.concatenate([IBUG68_FLIP, IRIS_ROWS["left"], IRIS_ROWS["right"]])
#: point count -> its flip
FLIPS = {68: IBUG68_FLIP, 72: IRIS72_FLIP}

VOX1_TEST_PERSONS = tuple(f"id{n}" for n in range(10270, 10310))  # VoxCeleb1 identification test: 40 persons


class DataRootError(ValueError):
    """``data.root`` is unset."""


class AugmentConfigError(ValueError):
    """``augment`` names a transform albumentations does not have, or bad arguments."""


# ----------------------------------------------------------------------------------------------- augmentation
def build_augment(spec: Mapping[str, Mapping[str, Any] | None] | None):  # -> A.ReplayCompose | None
    """``{"HorizontalFlip": {"p": 0.5}, "Affine": {...}, ...}`` -> albumentations ``ReplayCompose`` or None.

    Transforms run in the mapping's order; keypoints are ``xy`` pixels and are never dropped.
    """
    if not spec:
        return None
    import albumentations as A

    transforms = []
    for name, kwargs in spec.items():
        cls = getattr(A, str(name), None)
        if cls is None or not isinstance(cls, type):
            raise AugmentConfigError(
                f"augment: albumentations has no transform {name!r} (e.g. HorizontalFlip, "
                "Affine, ColorJitter)"
            )
        try:
            transforms.append(cls(**dict(kwargs or {})))
        except (TypeError, ValueError) as e:
            raise AugmentConfigError(f"augment: bad arguments for {name}: {e}") from e
    return A.ReplayCompose(transforms, keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))


def _flipped(replay: Mapping[str, Any]) -> bool:
    """Whether an odd number of horizontal flips was applied in an albumentations replay record."""
    n = 0
    for t in replay.get("transforms", []):
        if t.get("applied") and t.get("__class_fullname__", "").endswith("HorizontalFlip"):
            n += 1
        if "transforms" in t and t.get("applied", True):
            n += int(_flipped(t))
    return n % 2 == 1


def apply_augment(augment, frames: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same random augmentation on all frames uint8 (N,H,W,3) and landmarks (N,68,2); returns new arrays."""
    import albumentations as A

    out_f, out_l = [], []
    first = augment(image=frames[0], keypoints=landmarks[0])
    replay = first["replay"]
    out_f.append(first["image"])
    out_l.append(np.asarray(first["keypoints"], dtype=np.float32)[:, :2])
    for f, p in zip(frames[1:], landmarks[1:]):
        r = A.ReplayCompose.replay(replay, image=f, keypoints=p)
        out_f.append(r["image"])
        out_l.append(np.asarray(r["keypoints"], dtype=np.float32)[:, :2])
    pts = np.stack(out_l)
    if _flipped(replay):
        pts = pts[:, FLIPS[pts.shape[1]]]
    return np.stack(out_f), pts


# ---------------------------------------------------------------------------------------------- sample making
def make_sample(
    frames: np.ndarray, landmarks: np.ndarray, record: VideoRecord | VideoUnit, image_size: int, augment=None,
    uint8: bool = False,
) -> dict[str, Any]:  # noqa: ANN001
    """uint8 (K+1, S, S, 3) frames + (K+1, 68, 2) landmarks (S px) -> ``SampleDict`` at ``image_size``.

    ``uint8``: images stay uint8 (K+1, 3, H, W) (training loaders: converted on the device, see
    ``talkinghead.visualize.batch_to_float``); else float32 in [-1, 1]."""
    import cv2

    s = frames.shape[1]
    if s != image_size:
        interp = cv2.INTER_AREA if s > image_size else cv2.INTER_LINEAR
        frames = np.stack([cv2.resize(f, (image_size, image_size), interpolation=interp) for f in frames])
        landmarks = landmarks * (image_size / s)
    if augment is not None:
        frames, landmarks = apply_augment(augment, frames, landmarks)
    landmarks = np.ascontiguousarray(landmarks, dtype=np.float32)
    drawn = np.stack([draw_landmarks(p, image_size) for p in landmarks])
    to_tensor = uint8_chw if uint8 else from_uint8
    return {
        "frames": to_tensor(frames),
        "landmark_images": to_tensor(drawn),
        "landmarks": torch.from_numpy(landmarks),
        "video_index": torch.tensor(record.index, dtype=torch.int64),
        "person_id": record.person_id,
        "video_id": record.video_id,
    }


def pick_frames(num_frames: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """K+1 frame positions of a video: distinct when it has enough frames, else drawn with replacement."""
    return rng.choice(num_frames, size=k + 1, replace=num_frames < k + 1)


def _decode(sample: VideoSample, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    frames = np.stack([decode_jpeg(sample.frames[int(i)]) for i in positions])
    return frames, sample.landmarks[np.asarray(positions)]


def decode_unit(samples: Sequence[VideoSample], positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Frames at ``positions`` of a unit whose clips are ``samples`` (their frames end to end, in clip order):
    uint8 ``(N, S, S, 3)`` and landmarks float32 ``(N, 68, 2)``."""
    if len(samples) == 1:
        return _decode(samples[0], positions)
    starts = np.cumsum([0] + [len(s.frames) for s in samples])
    where = [(int(np.searchsorted(starts, p, side="right")) - 1, int(p)) for p in positions]
    frames = np.stack([decode_jpeg(samples[c].frames[p - starts[c]]) for c, p in where])
    return frames, np.stack([samples[c].landmarks[p - starts[c]] for c, p in where])


# ----------------------------------------------------------------------------------------------- partitioning
def partition(units: int, slot: int, slots: int, seed: int, epoch: int) -> list[int]:
    """Units (shards or videos) of loader ``slot`` of ``slots`` in ``epoch``: disjoint, covering, balanced."""
    perm = np.random.default_rng([seed, epoch]).permutation(units)
    return sorted(perm[slot::slots].tolist())


def quotas(counts: Sequence[int], total: int) -> list[int]:
    """Split ``total`` samples over workers in proportion to their video ``counts`` (largest remainder)."""
    n = sum(counts)
    if n == 0:
        return [0] * len(counts)
    exact = [total * c / n for c in counts]
    q = [int(math.floor(e)) for e in exact]
    for i in sorted(range(len(counts)), key=lambda i: (q[i] - exact[i], i))[: total - sum(q)]:
        q[i] += 1
    return q


@dataclass
class _Drawn:
    """A unit in the shuffle buffer: its K+1 drawn frames (JPEG bytes), their landmarks (K+1, 68, 2), the
    augmentation seed (None: no augmentation)."""

    unit: VideoUnit
    jpegs: list[bytes]
    landmarks: np.ndarray
    seed: int | None


def as_units(videos: Sequence[VideoUnit | VideoRecord]) -> list[VideoUnit]:
    """Units as given; a bare clip record is a unit of its own (its manifest row: ``data.unit=utterance``)."""
    return [v if isinstance(v, VideoUnit) else VideoUnit(v.index, v.video_id, v.person_id, (v,)) for v in videos]


class VoxCelebStream(IterableDataset):
    """Streams training samples (``SampleDict``) from shards; see the module doc for the rank/worker split.

    ``videos``: the training units (``VideoUnit``; a ``VideoRecord`` is a one-clip unit).
    ``rank``/``world_size``: this process's DDP rank (taken from ``torch.distributed`` when None).
    The epoch advances each time the dataset is iterated (use persistent loader workers) or via ``set_epoch``.
    """

    def __init__(
        self,
        manifest: Manifest,
        videos: Sequence[VideoUnit | VideoRecord],
        k: int,
        image_size: int,
        seed: int = 0,
        augment: Mapping[str, Any] | None = None,
        samples_per_video: int = 1,
        shuffle_buffer: int = 16,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        if not videos:
            raise ValueError("no training videos: every person of the manifest is a test person")
        self.manifest, self.videos, self.k, self.image_size = manifest, as_units(videos), int(k), int(image_size)
        self.seed, self.samples_per_video, self.shuffle_buffer = (
            int(seed),
            int(samples_per_video),
            int(shuffle_buffer),
        )
        self.augment_spec = dict(augment or {})
        self._augment = None
        if rank is None or world_size is None:
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
            else:
                rank, world_size = 0, 1
        self.rank, self.world_size = int(rank), int(world_size)
        if len(self.videos) < self.world_size:
            raise ValueError(f"{len(self.videos)} training videos cannot feed {self.world_size} DDP ranks")
        self.epoch = 0
        self.resume_batches = 0  # batches of `epoch` already trained on (a resumed run); see ResumableStreamLoader
        self.batch_size = 1  # the loader's (only used to resume mid-epoch)
        self._by_shard: dict[str, list[VideoUnit]] = {}  # home shards: a unit goes with its first clip's shard
        for u in self.videos:
            self._by_shard.setdefault(u.clips[0].shard, []).append(u)
        self._shards = sorted(self._by_shard)

    def __len__(self) -> int:
        """Samples this rank yields per epoch (over all its workers)."""
        return len(self.videos) * self.samples_per_video // self.world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def assignment(self, worker: int, num_workers: int, epoch: int) -> tuple[list[VideoUnit], int]:
        """Videos of (this rank, ``worker``) in ``epoch`` and how many samples that worker yields."""
        slots = self.world_size * num_workers

        def videos_of(slot: int) -> list[VideoUnit]:
            if len(self._shards) >= slots:
                return [
                    v
                    for i in partition(len(self._shards), slot, slots, self.seed, epoch)
                    for v in self._by_shard[self._shards[i]]
                ]
            return [self.videos[i] for i in partition(len(self.videos), slot, slots, self.seed, epoch)]

        mine = [videos_of(self.rank * num_workers + w) for w in range(num_workers)]
        q = quotas([len(m) for m in mine], len(self))
        return mine[worker], q[worker]

    def batch_workers(self, num_workers: int, epoch: int) -> list[int]:
        """The loader worker each batch of ``epoch`` comes from, in the order the DataLoader yields them: round
        robin over the workers that still have a full batch (each drops its last partial one)."""
        n = [self.assignment(w, num_workers, epoch)[1] // max(1, self.batch_size) for w in range(num_workers)]
        return [w for r in range(max(n, default=0)) for w in range(num_workers) if r < n[w]]

    def resume_role(self, worker: int, num_workers: int, epoch: int, done: int) -> tuple[int, int]:
        """(role, samples to skip) of loader ``worker`` when ``done`` batches of ``epoch`` were trained on.

        A fresh DataLoader asks worker 0 first; the next batch of the interrupted epoch belongs to worker
        ``w0``: so worker p plays worker ``(p + w0) % num_workers`` for the rest of this epoch (the round robin
        then yields the same batches in the same order) and skips what that role had already produced."""
        order = self.batch_workers(num_workers, epoch)
        if not 0 < done < len(order):
            return worker, 0
        role = (worker + order[done]) % num_workers
        return role, order[:done].count(role) * max(1, self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch = self.epoch
        self.epoch += 1
        skip = 0
        if self.resume_batches:  # the first epoch of a resumed run (in each worker's copy), then never again
            worker, skip = self.resume_role(worker, num_workers, epoch, self.resume_batches)
            self.resume_batches = 0
        videos, quota = self.assignment(worker, num_workers, epoch)
        if quota == 0 or not videos:
            return
        rng = np.random.default_rng([self.seed, epoch, self.rank, worker])
        if self._augment is None and self.augment_spec:
            self._augment = build_augment(self.augment_spec)
        unit_of = {c.video_id: u for u in videos for c in u.clips}  # clip id -> its unit, for the clips I need
        need: dict[str, int] = {}  # shard -> how many of my clips it holds
        for u in videos:
            for c in u.clips:
                need[c.shard] = need.get(c.shard, 0) + 1
        shards = sorted(need)
        yielded = 0
        while yielded < quota:
            buffer: list[_Drawn] = []
            partial: dict[str, list[VideoSample]] = {}  # a unit's clips read so far (a unit may span shards)
            for si in rng.permutation(len(shards)):
                shard, found = shards[si], 0
                for sample in iter_shard(self.manifest.locate(shard)):
                    unit = unit_of.get(sample.meta["video_id"])
                    if unit is None:
                        continue
                    found += 1
                    got = partial.setdefault(unit.video_id, [])
                    got.append(sample)
                    if len(got) == len(unit.clips):
                        del partial[unit.video_id]
                        got.sort(key=lambda s: s.meta["video_id"])
                        buffer.append(self._draw(got, unit, rng))
                    if len(buffer) >= max(1, self.shuffle_buffer):
                        out = self._sample(buffer.pop(int(rng.integers(len(buffer)))), rng, yielded < skip)
                        yielded += 1
                        if out is not None:
                            yield out
                        if yielded >= quota:
                            return
                    if found == need[shard]:
                        break  # the rest of the shard is other workers' (e.g. the head of a neighbour's shard)
                if found < need[shard]:
                    raise ShardError(f"shard {self.manifest.locate(shard)} ended after {found} of its "
                                     f"{need[shard]} training clips read here: it is truncated; re-copy it or re-run "
                                     "preprocessing")
            while buffer:
                out = self._sample(buffer.pop(int(rng.integers(len(buffer)))), rng, yielded < skip)
                yielded += 1
                if out is not None:
                    yield out
                if yielded >= quota:
                    return

    def _draw(self, samples: Sequence[VideoSample], unit: VideoUnit, rng: np.random.Generator) -> _Drawn:
        """Draw a unit's K+1 frames (uniformly over the frames of all its clips) and augmentation seed as it enters
        the shuffle buffer, which then holds only those K+1 JPEGs, not the whole video."""
        positions = pick_frames(sum(len(s.frames) for s in samples), self.k, rng)
        seed = int(rng.integers(2**31)) if self.augment_spec else None
        starts = np.cumsum([0] + [len(s.frames) for s in samples])
        where = [(int(np.searchsorted(starts, p, side="right")) - 1, int(p)) for p in positions]
        jpegs = [samples[c].frames[p - starts[c]] for c, p in where]
        landmarks = np.stack([samples[c].landmarks[p - starts[c]] for c, p in where])
        return _Drawn(unit, jpegs, landmarks, seed)

    def _sample(self, item: _Drawn, rng: np.random.Generator, skip: bool = False) -> dict[str, Any] | None:
        """The training sample of a drawn unit; ``skip`` decodes nothing (a resumed run passing over what was
        already trained on; every random number was drawn before, so the rest of the stream is unchanged)."""
        if skip:
            return None
        if item.seed is not None:
            self._augment.set_random_seed(item.seed)  # per sample: a skipped sample leaves the next one's draw alone
        frames = np.stack([decode_jpeg(j) for j in item.jpegs])
        return make_sample(frames, item.landmarks, item.unit, self.image_size, self._augment, uint8=True)


class VoxCelebVideos(Dataset):
    """Map-style: item i is one fixed sample (K+1 frames, a seeded draw over all its clips) of unit
    ``videos[i]``, no augmentation. Used for validation/test."""

    def __init__(
        self, manifest: Manifest, videos: Sequence[VideoUnit | VideoRecord], k: int, image_size: int, seed: int = 0
    ) -> None:
        self.manifest, self.videos, self.k, self.image_size, self.seed = (
            manifest,
            as_units(videos),
            k,
            image_size,
            seed,
        )
        self._reader: ShardReader | None = None

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def reader(self) -> ShardReader:
        if self._reader is None:
            self._reader = ShardReader(self.manifest)
        return self._reader

    def __getitem__(self, i: int) -> dict[str, Any]:
        unit = self.videos[i]
        samples = [self.reader.read(c.video_id) for c in unit.clips]
        total = sum(len(s.frames) for s in samples)
        positions = pick_frames(total, self.k, np.random.default_rng([self.seed, unit.index]))
        frames, lmk = decode_unit(samples, positions)
        return make_sample(frames, lmk, unit, self.image_size)


# ------------------------------------------------------------------------------------------------ DataModules
class VoxCelebDataModule(pl.LightningDataModule):
    """Shared base of the VoxCeleb1/2 DataModules (arguments: see ``experiments/data/vox2.yaml``).

    Reads ``manifest.json`` on construction, so ``num_videos`` is known before the model is built.
    """

    OFFICIAL_TEST_PERSONS: tuple[str, ...] = ()
    NAME = "VoxCeleb"

    def __init__(
        self,
        root: str | Path | None,
        K: int = 8,
        image_size: int = 256,
        batch_size: int | None = None,
        num_workers: int = 4,
        seed: int = 0,
        augment: Mapping[str, Any] | None = None,
        test_persons: Sequence[str] | None = None,
        test_fraction: float = 0.0,
        samples_per_video: int = 1,
        shuffle_buffer: int = 16,
        max_val_videos: int | None = 64,
        pin_memory: bool = True,
        prefetch_factor: int = 4,
        unit: str = "video",
        landmarks: str | None = None,
        global_batch_size: int | None = 8,
    ) -> None:
        super().__init__()
        if root is None or str(root).strip() in ("", "???", "None", "null"):
            data = "vox1" if "1" in type(self).__name__ else "vox2"
            raise DataRootError(
                f"data.root is not set: run `make preprocess SRC=<{self.NAME} mp4 folder> "
                f"OUT=<shards folder>` then `make meta-learn DATA={data} DATA_ROOT=<shards folder>`"
            )
        self.root = str(root) if is_remote(root) else local_path(root)  # a URL streams (data_modules.remote)
        self.manifest = load_manifest(self.root)
        if not self.manifest.videos:
            raise ValueError(
                f"{self.root}/manifest.json lists no videos: preprocessing kept none (see report.json)"
            )
        if landmarks is not None:  # the model's landmark set (data.landmarks); the shards' must be the same
            try:
                require_same_set("the model (data.landmarks)", check_set(landmarks),
                                 f"the shards in {self.root}", self.manifest.landmarks)
            except LandmarkSetError as e:
                if landmarks != IBUG68_IRIS or is_remote(self.root):
                    raise
                upgrade = UPGRADE_IRISES_COMMAND.format(root=self.root)
                raise LandmarkSetError(f"{e}; add the irises to them with `{upgrade}` (no video is decoded again)") from None
        self.landmarks = self.manifest.landmarks
        self.unit = str(unit)
        self.units = self.manifest.units(self.unit)  # UnitError / ManifestError (one line) on bad unit or manifest
        if self.manifest.reindexed and self.unit == "video":
            warnings.warn(
                f"{self.root}/manifest.json predates the per-video field: its videos were recovered from the clip ids "
                "(person/video/utterance); re-run `make preprocess` with the same arguments to rewrite it",
                stacklevel=2,
            )
        if not self.manifest.complete:
            warnings.warn(
                f"{self.root} is only partly preprocessed (manifest.complete is false): training on the "
                "videos written so far; re-run `make preprocess` to finish",
                stacklevel=2,
            )
        # per device: batch_size, or else the global batch on one device (meta-learning passes the split batch)
        self.K, self.image_size = int(K), int(image_size)
        self.batch_size = split_batch(global_batch_size, batch_size).per_device
        self.num_workers, self.seed, self.augment = int(num_workers), int(seed), dict(augment or {})
        self.samples_per_video, self.shuffle_buffer = int(samples_per_video), int(shuffle_buffer)
        self.max_val_videos, self.pin_memory = max_val_videos, bool(pin_memory)
        self.prefetch_factor = int(prefetch_factor)
        if self.prefetch_factor < 1:
            raise ValueError(f"prefetch_factor must be >= 1 (batches each loader worker prepares ahead), "
                             f"got {prefetch_factor}")
        build_augment(self.augment)  # fail early on a bad config
        self.test_person_ids = self._test_persons(test_persons, float(test_fraction))
        self.train_videos = [u for u in self.units if u.person_id not in self.test_person_ids]
        self.test_videos = [u for u in self.units if u.person_id in self.test_person_ids]
        self._units_by_id = {u.video_id: u for u in self.units}
        self._by_id: dict[str, VideoRecord] | None = None
        self._reader: ShardReader | None = None

    # ---- facts
    @property
    def num_videos(self) -> int:
        """Rows of D's W table: all units of the manifest (videos; clips with ``unit=utterance``)."""
        return len(self.units)

    @property
    def train_persons(self) -> list[str]:
        return sorted({v.person_id for v in self.train_videos})

    @property
    def test_persons(self) -> list[str]:
        return sorted(self.test_person_ids)

    def _test_persons(self, override: Sequence[str] | None, fraction: float) -> set[str]:
        persons = self.manifest.persons
        if override is not None:
            return set(map(str, override))
        test = {v.person_id for v in self.manifest.videos if v.split == "test"} | (
            set(self.OFFICIAL_TEST_PERSONS) & set(persons)
        )
        if not test and fraction > 0:
            n = max(1, int(round(fraction * len(persons))))
            if n >= len(persons):
                raise ValueError(f"test_fraction={fraction} leaves no training person of {len(persons)}")
            order = np.random.default_rng(self.seed).permutation(len(persons))
            test = {persons[i] for i in order[:n]}
        return test

    # ---- rank
    def _rank_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return int(trainer.global_rank), int(trainer.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    # ---- datasets and loaders
    def train_dataset(self) -> VoxCelebStream:
        rank, world = self._rank_world()
        return VoxCelebStream(
            self.manifest,
            self.train_videos,
            self.K,
            self.image_size,
            self.seed,
            self.augment,
            self.samples_per_video,
            self.shuffle_buffer,
            rank,
            world,
        )

    def val_dataset(self) -> VoxCelebVideos:
        videos = self.test_videos[: self.max_val_videos] if self.max_val_videos else self.test_videos
        return VoxCelebVideos(self.manifest, videos, self.K, self.image_size, self.seed)

    def train_dataloader(self) -> DataLoader:
        ds = self.train_dataset()
        ds.batch_size = self.batch_size
        return ResumableStreamLoader(
            ds,
            progress=self._progress,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            drop_last=True,
            persistent_workers=self.num_workers > 0,
            prefetch_factor=self.prefetch_factor if self.num_workers > 0 else None,
        )

    def _progress(self) -> tuple[int, int]:
        """(epoch, batches of it trained on) from the trainer's loop (read when a checkpoint is written)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 0
        return int(trainer.current_epoch), int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def val_dataloader(self) -> DataLoader | list:
        ds = self.val_dataset()
        if len(ds) == 0:
            return []
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            num_workers=min(self.num_workers, 2),
            shuffle=False,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=min(self.num_workers, 2) > 0,  # no worker start-up at every validation
        )

    def test_dataloader(self) -> DataLoader | list:
        return self.val_dataloader()

    # ---- single videos (fine-tuning on a test person)
    @property
    def reader(self) -> ShardReader:
        if self._reader is None:
            self._reader = ShardReader(self.manifest)
        return self._reader

    def videos_of(self, person_id: str) -> list[VideoUnit]:
        return [u for u in self.units if u.person_id == person_id]

    def unit_of(self, video_id: str) -> VideoUnit:
        """The unit named ``video_id``, or the one-clip unit of a clip id (its row: its video's)."""
        if video_id in self._units_by_id:
            return self._units_by_id[video_id]
        if self._by_id is None:
            self._by_id = self.manifest.by_id()
        rec = self._by_id.get(video_id)
        if rec is None:
            raise KeyError(f"{video_id!r} is neither a video nor a clip of {self.root}/manifest.json")
        home = self._units_by_id[rec.video if self.unit == "video" else rec.video_id]
        return VideoUnit(home.index, rec.video_id, rec.person_id, (rec,))

    # ---- the person API (data_modules.persons)
    @property
    def where(self) -> str:
        return f"{self.root}/manifest.json"

    def known_ids(self) -> list[str]:
        """Person ids, video ids (``person/youtube id``) and clip ids (``person/video/utterance``) of the manifest."""
        videos = list(dict.fromkeys(v.video for v in self.manifest.videos if v.video))
        return self.manifest.persons + videos + [v.video_id for v in self.manifest.videos]

    def held_out_video_ids(self) -> list[str]:
        """The units (``data.unit``) of the held-out persons: with ``video``, every YouTube video of a test person,
        its utterances pooled."""
        return [v.video_id for v in self.test_videos]

    def person_frames(self, id_: str, video_length: int = SYNTHETIC_VIDEO_LENGTH) -> PersonData:
        """The frames of a clip, a video (its utterances end to end) or a person (all its clips), in id order, at
        this module's image size (``video_length`` is the synthetic data's: shards know their lengths)."""
        by_id = self.manifest.by_id()
        records = (
            [by_id[id_]] if id_ in by_id
            else [v for v in self.manifest.videos if v.video == id_]
            or [v for v in self.manifest.videos if v.person_id == id_]
        )
        if not records:
            raise KeyError(f"{id_!r} is not a person, video or clip of {self.where}")
        reader = ShardReader(self.manifest)
        index = [(r, i) for r in records for i in range(r.num_frames)]
        size = self.image_size

        def loader(positions: Sequence[int]) -> dict[str, torch.Tensor]:
            out: dict[str, list[torch.Tensor]] = {"frames": [], "landmark_images": [], "landmarks": []}
            cache: dict[str, Any] = {}
            for p in positions:
                rec, i = index[p]
                if rec.video_id not in cache:
                    cache[rec.video_id] = reader.read(rec.video_id)
                sample = cache[rec.video_id]
                s = make_sample(decode_jpeg(sample.frames[i])[None], sample.landmarks[[i]], rec, size)
                for k in out:
                    out[k].append(s[k])
            return {k: torch.cat(v) for k, v in out.items()}

        return PersonData(records[0].person_id, [r.video_id for r in records], len(index), loader)

    def frames_of(self, video_id: str, indices: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stored frames of one video (all its clips end to end, in id order) or of one clip: uint8
        ``(T, S, S, 3)`` and landmarks float32 ``(T, 68, 2)`` (S px).

        ``indices``: positions among those frames (default all).
        """
        samples = [self.reader.read(c.video_id) for c in self.unit_of(video_id).clips]
        positions = range(sum(len(s.frames) for s in samples)) if indices is None else indices
        return decode_unit(samples, list(positions))

    def sample_of(self, video_id: str, indices: Sequence[int]) -> dict[str, Any]:
        """A ``SampleDict`` of the given frame positions of one video or clip (no augmentation)."""
        frames, lmk = self.frames_of(video_id, indices)
        return make_sample(frames, lmk, self.unit_of(video_id), self.image_size)


class VoxCeleb1DataModule(VoxCelebDataModule):
    """VoxCeleb1 (Nagrani et al. 2017): test persons are the official identification test ids
    id10270..id10309."""

    OFFICIAL_TEST_PERSONS = VOX1_TEST_PERSONS
    NAME = "VoxCeleb1"


class VoxCeleb2DataModule(VoxCelebDataModule):
    """VoxCeleb2 (Chung et al. 2018): test persons are those of its ``test`` folder (recorded per video
    when the shards were made from a tree holding ``dev`` and ``test``; shards made from ``dev`` only have
    no test person: set ``test_persons`` or ``test_fraction``)."""

    NAME = "VoxCeleb2"
