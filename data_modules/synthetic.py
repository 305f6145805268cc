"""The embedded default dataset: procedural talking heads made from a seed (no files, no internet).

It is a genuine few-shot problem: identities differ in geometry and appearance, each has several videos,
and the generator has to read the identity from the K source frames. Splits are by identity:

* train: the first ``num_identities - test_identities`` identities, frames ``t in [0, frames_per_video)``;
* val: the same training videos (same ``video_index`` -> same row of D's W table), held-out frames
  ``t in [frames_per_video, frames_per_video + heldout_frames)``;
* test: the last ``test_identities`` identities (never trained on), for fine-tuning / evaluation.

Samples follow the common format of :mod:`data_modules` (``frames``, ``landmark_images``,
``landmarks``, ``video_index``, ``person_id``, ``video_id``).  ``landmarks="ibug68+iris"`` adds the exact irises
(``talkinghead.landmarks.sets``: ``(72, 2)`` points, NaN rows for a closed eye), drawn into the landmark images,
so a model sees where the heads look. Sample ``i`` is a pure function of
``(seed, i)``, and :class:`EpochSampler` makes the order a pure function of ``(seed, epoch)``, so a run
resumed from a checkpoint sees exactly the data it would have seen.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from data_modules.batch import split_batch
from data_modules.persons import SYNTHETIC_VIDEO_LENGTH, PersonData
from data_modules.procedural_heads import Expression, HeadPose, SyntheticHeads
from data_modules.resumable import ResumableDataLoader
from talkinghead.landmarks.draw import draw_landmarks
from talkinghead.landmarks.sets import IBUG68, IBUG68_IRIS, check_set, with_irises
from talkinghead.visualize import from_uint8, uint8_chw

__all__ = [
    "SyntheticHeads",
    "HeadPose",
    "Expression",
    "SyntheticTalkingHeads",
    "EpochSampler",
    "SyntheticDataModule",
    "SyntheticDataError",
    "parse_video_id",
    "person_id_of",
    "video_id_of",
]


class SyntheticDataError(ValueError):
    """Inconsistent settings of the synthetic dataset."""


def person_id_of(identity: int) -> str:
    """``3 -> "syn0003"``."""
    return f"syn{identity:04d}"


def video_id_of(identity: int, video: int) -> str:
    """``(3, 1) -> "syn0003/v01"``."""
    return f"{person_id_of(identity)}/v{video:02d}"


def parse_video_id(video_id: str) -> tuple[int, int]:
    try:
        person, vid = video_id.split("/")
        if not (person.startswith("syn") and vid.startswith("v")):
            raise ValueError
        return int(person[3:]), int(vid[1:])
    except ValueError:
        raise SyntheticDataError(
            f"not a synthetic video id: {video_id!r} (expected like 'syn0003/v01')") from None


def render_clip(heads: SyntheticHeads, identity: int, video: int, ts: Sequence[float], size: int,
                uint8: bool = False, landmarks: str = IBUG68) -> dict[str, torch.Tensor]:
    """Frames ``ts`` of a video as tensors.

    Returns:
        ``frames`` ``(N, 3, H, W)`` and ``landmark_images`` ``(N, 3, H, W)`` float32 in [-1, 1] (``uint8``: uint8
        0..255, converted on the device by the LightningModule), ``landmarks`` ``(N, 68, 2)`` float32 pixels
        (``(N, 72, 2)`` with the exact irises for ``landmarks="ibug68+iris"``).
    """
    frames, lmk_imgs, lmks = [], [], []
    to_tensor = uint8_chw if uint8 else from_uint8
    irises = check_set(landmarks) == IBUG68_IRIS
    for t in ts:
        img, lm = heads.render(identity, video, t, size)
        if irises:
            lm = with_irises(lm, *heads.irises(identity, video, t, size))
        frames.append(to_tensor(img))
        lmk_imgs.append(to_tensor(draw_landmarks(lm, size)))
        lmks.append(torch.from_numpy(np.array(lm, dtype=np.float32)))
    return {"frames": torch.stack(frames), "landmark_images": torch.stack(lmk_imgs),
            "landmarks": torch.stack(lmks)}


class SyntheticTalkingHeads(Dataset):
    """One item = K+1 distinct frames of one video of the listed identities.

    Args:
        heads: the procedural head population.
        identities: identities in this split; its videos are ``[(i, v) for i in identities for v in
            range(heads.videos_per_identity)]`` and ``video_index`` is the position in that list.
        K: number of source frames (``frames[:K]``); ``frames[K]`` is the target.
        image_size: H = W.
        frames_per_video: frames are drawn from ``t in [frame_offset, frame_offset + frames_per_video)``.
        frame_offset: first frame index of this split.
        seed: item ``i`` uses ``np.random.default_rng([seed, i])`` to pick its frames.
        length: ``len(self)`` (default: number of videos). Any index ``i >= 0`` is valid, also
            ``i >= len``: the video is ``i % num_videos`` and the frame choice depends on the whole ``i``.
        uint8: images as uint8 0..255 (the training split: converted on the device), else float in [-1, 1].
        landmarks: the landmark set (``ibug68`` or ``ibug68+iris``; ``talkinghead.landmarks.sets``).
    """

    def __init__(self, heads: SyntheticHeads, identities: Sequence[int], K: int, image_size: int,
                 frames_per_video: int, frame_offset: int = 0, seed: int = 0,
                 length: int | None = None, uint8: bool = False, landmarks: str = IBUG68) -> None:
        if K < 1:
            raise SyntheticDataError(f"K must be >= 1 source frame, got K={K}")
        if K + 1 > frames_per_video:
            raise SyntheticDataError(
                f"K={K} needs K+1={K + 1} frames but videos have {frames_per_video}; lower K or raise "
                f"frames_per_video (or heldout_frames for the validation split)")
        if not identities:
            raise SyntheticDataError("identities is empty: the split has no videos")
        bad = [i for i in identities if not 0 <= i < heads.num_identities]
        if bad:
            raise SyntheticDataError(f"identities {bad} are outside [0, {heads.num_identities})")
        if length is not None and length < 1:
            raise SyntheticDataError(f"length must be >= 1 or None, got {length}")
        self.heads = heads
        self.identities = [int(i) for i in identities]
        self.K = int(K)
        self.image_size = int(image_size)
        self.frames_per_video = int(frames_per_video)
        self.frame_offset = int(frame_offset)
        self.seed = int(seed)
        self.videos: list[tuple[int, int]] = [(i, v) for i in self.identities
                                              for v in range(heads.videos_per_identity)]
        self.video_ids: list[str] = [video_id_of(i, v) for i, v in self.videos]
        self.length = int(length) if length is not None else len(self.videos)
        self.uint8 = bool(uint8)
        self.landmarks = check_set(landmarks)

    @property
    def num_videos(self) -> int:
        return len(self.videos)

    def __len__(self) -> int:
        return self.length

    def frame_indices(self, index: int) -> np.ndarray:
        """The K+1 frame indices ``t`` of item ``index`` (sources first, target last)."""
        rng = np.random.default_rng([self.seed, int(index)])
        return rng.choice(self.frames_per_video, size=self.K + 1, replace=False) + self.frame_offset

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if index < 0:
            raise IndexError(f"negative index {index} is not supported by SyntheticTalkingHeads")
        vi = index % len(self.videos)
        identity, video = self.videos[vi]
        clip = render_clip(self.heads, identity, video, self.frame_indices(index).tolist(), self.image_size,
                           uint8=self.uint8, landmarks=self.landmarks)
        clip["video_index"] = torch.tensor(vi, dtype=torch.int64)
        clip["person_id"] = person_id_of(identity)
        clip["video_id"] = self.video_ids[vi]
        return clip


class EpochSampler(Sampler[int]):
    """Yields ``epoch * n + perm[j]`` with ``perm`` a permutation of ``range(n)`` seeded by ``(seed, epoch)``.

    The data order is a pure function of ``(seed, epoch)`` (exact resume), and since the dataset
    accepts indices ``>= len``, different epochs pick different frames of the same videos.
    Lightning calls :meth:`set_epoch` at the start of every epoch.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        if n < 1:
            raise SyntheticDataError(f"EpochSampler needs n >= 1, got {n}")
        self.n, self.seed, self.shuffle, self.epoch = int(n), int(seed), bool(shuffle), 0
        self.start = 0  # skip this many indices once (resuming mid-epoch); see data_modules.resumable

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            perm = np.random.default_rng([self.seed, self.epoch, 0x5EED]).permutation(self.n)
        else:
            perm = np.arange(self.n)
        base = self.epoch * self.n
        start, self.start = self.start, 0
        return iter((base + perm[start:]).tolist())

    def __len__(self) -> int:
        return self.n


class SyntheticDataModule(pl.LightningDataModule):
    """Procedural talking heads, split by identity (see the module docstring).

    Args:
        num_identities: people in the population.
        videos_per_identity: videos per person.
        test_identities: the last this-many identities form the test split (never trained on).
        frames_per_video: training frames per video, ``t in [0, frames_per_video)``.
        heldout_frames: validation frames per training video, ``t in [frames_per_video, +heldout_frames)``.
        K: source frames per sample.
        image_size: H = W of frames and landmark images.
        batch_size: samples per batch and device; None: ``global_batch_size`` (one device: see ``data_modules.batch``).
        num_workers: DataLoader workers.
        seed: appearance, motion, frame choice and data order all derive from it.
        samples_per_epoch: training items per epoch (default: one per training video).
        landmarks: the landmark set the samples carry and draw: ``ibug68`` (the paper's 68 points) or
            ``ibug68+iris`` (plus the exact irises; ``talkinghead.landmarks.sets``).
        global_batch_size: samples per optimiser step, all devices together (used when ``batch_size`` is None).
    """

    def __init__(self, num_identities: int = 40, videos_per_identity: int = 3, test_identities: int = 8,
                 frames_per_video: int = 32, heldout_frames: int = 16, K: int = 4, image_size: int = 64,
                 batch_size: int | None = None, num_workers: int = 0, seed: int = 0,
                 samples_per_epoch: int | None = None, global_batch_size: int | None = 8,
                 landmarks: str = IBUG68) -> None:
        super().__init__()
        check_set(landmarks)
        if num_identities < 2:
            raise SyntheticDataError(f"num_identities must be >= 2 (train + test), got {num_identities}")
        if not 1 <= test_identities < num_identities:
            raise SyntheticDataError(
                f"test_identities={test_identities} must be in [1, num_identities={num_identities}) so that "
                f"some identities remain for training")
        if videos_per_identity < 1:
            raise SyntheticDataError(f"videos_per_identity must be >= 1, got {videos_per_identity}")
        if K < 1:
            raise SyntheticDataError(f"K must be >= 1, got {K}")
        if K + 1 > frames_per_video:
            raise SyntheticDataError(
                f"K={K} needs K+1={K + 1} frames but videos have {frames_per_video}; lower K or raise "
                f"frames_per_video")
        if K + 1 > heldout_frames:
            raise SyntheticDataError(
                f"K={K} needs K+1={K + 1} frames but the validation split has "
                f"heldout_frames={heldout_frames}; "
                f"lower K or raise heldout_frames")
        if image_size < 16:
            raise SyntheticDataError(f"image_size must be >= 16, got {image_size}")
        batch_size = split_batch(global_batch_size, batch_size).per_device  # BatchSizeError (one line)
        if num_workers < 0:
            raise SyntheticDataError(f"need num_workers >= 0, got {num_workers}")
        if samples_per_epoch is not None and samples_per_epoch < 1:
            raise SyntheticDataError(f"samples_per_epoch must be >= 1 or None, got {samples_per_epoch}")
        self.save_hyperparameters()
        self.num_identities = int(num_identities)
        self.videos_per_identity = int(videos_per_identity)
        self.test_identities = int(test_identities)
        self.frames_per_video = int(frames_per_video)
        self.heldout_frames = int(heldout_frames)
        self._K = int(K)
        self._image_size = int(image_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.samples_per_epoch = samples_per_epoch
        self.landmarks = str(landmarks)
        self.heads = SyntheticHeads(num_identities, videos_per_identity, seed=seed)
        n_train = num_identities - test_identities
        self.train_identities = list(range(n_train))
        self.test_identity_list = list(range(n_train, num_identities))
        common = dict(K=self._K, image_size=self._image_size, seed=self.seed, landmarks=self.landmarks)
        self.train_set = SyntheticTalkingHeads(self.heads, self.train_identities,
                                               frames_per_video=frames_per_video,
                                               frame_offset=0, length=samples_per_epoch, uint8=True, **common)
        self.val_set = SyntheticTalkingHeads(self.heads, self.train_identities,
                                             frames_per_video=heldout_frames,
                                             frame_offset=frames_per_video, **common)
        self.test_set = SyntheticTalkingHeads(self.heads, self.test_identity_list,
                                              frames_per_video=frames_per_video, frame_offset=0, **common)
        self.train_sampler = EpochSampler(len(self.train_set), seed=self.seed)

    # -- properties the LightningModules read ----------------------------------------------------
    @property
    def num_videos(self) -> int:
        """Training videos = rows of the discriminator's W table."""
        return self.train_set.num_videos

    @property
    def image_size(self) -> int:
        return self._image_size

    @property
    def K(self) -> int:
        return self._K

    @property
    def video_ids(self) -> list[str]:
        """Training video ids; ``video_ids[video_index]`` is the id of W's row ``video_index``."""
        return list(self.train_set.video_ids)

    @property
    def test_video_ids(self) -> list[str]:
        """Video ids of the held-out (test) identities."""
        return list(self.test_set.video_ids)

    # ---- the person API (data_modules.persons)
    @property
    def where(self) -> str:
        return "the embedded synthetic population"

    def known_ids(self) -> list[str]:
        """Person ids (``syn0003``) and video ids (``syn0003/v01``) of every identity, training and held out."""
        return [person_id_of(i) for i in range(self.num_identities)] + [
            video_id_of(i, v) for i in range(self.num_identities) for v in range(self.videos_per_identity)]

    def held_out_video_ids(self) -> list[str]:
        return self.test_video_ids

    def person_frames(self, id_: str, video_length: int = SYNTHETIC_VIDEO_LENGTH) -> PersonData:
        """A person's videos (or one video) as ``video_length`` frames each, ``t = 0 .. video_length - 1``."""
        person = id_.split("/")[0]
        ident = parse_video_id(id_ if "/" in id_ else f"{person}/v00")[0]
        videos = [id_] if "/" in id_ else [video_id_of(ident, v) for v in range(self.videos_per_identity)]

        def loader(positions: Sequence[int]) -> dict[str, torch.Tensor]:
            parts = [self.frames_of(videos[p // video_length], [p % video_length]) for p in positions]
            return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}

        return PersonData(person, videos, video_length * len(videos), loader)

    def frames_of(self, video_id: str, indices: Sequence[int], image_size: int | None = None
                  ) -> dict[str, torch.Tensor]:
        """Frames ``indices`` (any integers ``t``) of any video of the population, e.g. for fine-tuning on
        a test identity.

        Returns:
            ``frames`` / ``landmark_images`` ``(N, 3, H, W)`` in [-1, 1], ``landmarks`` ``(N, 68, 2)`` (or
            ``(N, 72, 2)``, the data module's landmark set).
        """
        identity, video = parse_video_id(video_id)
        if not 0 <= identity < self.num_identities or not 0 <= video < self.videos_per_identity:
            raise SyntheticDataError(
                f"{video_id!r} is not in this population ({self.num_identities} identities x "
                f"{self.videos_per_identity} videos)")
        if len(indices) == 0:
            raise SyntheticDataError("frames_of needs at least one frame index")
        return render_clip(self.heads, identity, video, [int(t) for t in indices],
                           self._image_size if image_size is None else int(image_size), landmarks=self.landmarks)

    # -- loaders ---------------------------------------------------------------------------------
    def _loader(self, ds: Dataset, sampler: Sampler | None) -> DataLoader:
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, shuffle=False,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return ResumableDataLoader(
            self.train_set, batch_size=self.batch_size, sampler=self.train_sampler, shuffle=False,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0, drop_last=False,
            batches_done=self._batches_done,
        )

    def _batches_done(self) -> int:
        """Batches of the current epoch already trained on (read when a checkpoint is written)."""
        trainer = getattr(self, "trainer", None)
        return 0 if trainer is None else int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, None)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, None)
