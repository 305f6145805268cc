"""data_modules.synthetic: the embedded procedural talking-head dataset."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from data_modules.synthetic import (
    EpochSampler,
    Expression,
    HeadPose,
    SyntheticDataModule,
    SyntheticHeads,
    SyntheticTalkingHeads,
)
from talkinghead.landmarks.draw import landmark_image_tensor
from talkinghead.visualize import batch_to_float, from_uint8


@pytest.fixture(scope="module")
def heads() -> SyntheticHeads:
    return SyntheticHeads(num_identities=12, videos_per_identity=2, seed=5)


@pytest.fixture(scope="module")
def dm() -> SyntheticDataModule:
    return SyntheticDataModule(num_identities=10, videos_per_identity=2, test_identities=3,
                               frames_per_video=12, heldout_frames=6, K=3, image_size=64, batch_size=4,
                               seed=1)


# ---------------------------------------------------------------- renderer

def test_render_is_deterministic_and_seed_dependent() -> None:
    a = SyntheticHeads(6, 2, seed=3, cache_mb=0)
    b = SyntheticHeads(6, 2, seed=3, cache_mb=0)
    img_a, lm_a = a.render(4, 1, 17, 64)
    img_b, lm_b = b.render(4, 1, 17, 64)
    np.testing.assert_array_equal(img_a, img_b)
    np.testing.assert_array_equal(lm_a, lm_b)
    img_c, _ = SyntheticHeads(6, 2, seed=4, cache_mb=0).render(4, 1, 17, 64)
    assert np.abs(img_a.astype(int) - img_c).mean() > 5


def test_render_types_and_sizes(heads: SyntheticHeads) -> None:
    for size in (64, 128, 256):
        img, lm = heads.render(2, 0, 3, size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert lm.shape == (68, 2) and lm.dtype == np.float32
    # landmarks scale with the resolution (same frame, pixel-centre convention)
    _, lm64 = heads.render(2, 0, 3, 64)
    _, lm256 = heads.render(2, 0, 3, 256)
    np.testing.assert_allclose((lm64 + 0.5) * 4 - 0.5, lm256, atol=1e-3)


def test_cached_render_equals_fresh_render(heads: SyntheticHeads) -> None:
    first = heads.render(1, 1, 9, 64)
    again = heads.render(1, 1, 9, 64)
    fresh = SyntheticHeads(12, 2, seed=5, cache_mb=0).render(1, 1, 9, 64)
    np.testing.assert_array_equal(again[0], fresh[0])
    np.testing.assert_array_equal(first[1], fresh[1])


def test_same_landmarks_different_identities_look_different(heads: SyntheticHeads) -> None:
    pose, expr = HeadPose(yaw=12, pitch=-4, roll=3), Expression(mouth_open=0.6, smile=0.3)
    for a, b in ((0, 1), (2, 3), (4, 5), (6, 7)):
        img_a, lm_a = heads.render_with(a, pose, expr, 64, shape_of=a)
        img_b, lm_b = heads.render_with(b, pose, expr, 64, shape_of=a)
        np.testing.assert_allclose(lm_a, lm_b)
        diff = np.abs(img_a.astype(float) - img_b).mean(-1)
        face = np.zeros((64, 64), np.uint8)
        cv2.fillConvexPoly(face, cv2.convexHull(np.rint(lm_a[:27]).astype(np.int32)), 1)
        assert diff.mean() > 20, (a, b, diff.mean())
        assert diff[face > 0].mean() > 10, (a, b, diff[face > 0].mean())


def test_landmarks_inside_image_and_anatomically_ordered(heads: SyntheticHeads) -> None:
    for identity in range(heads.num_identities):
        for video in range(heads.videos_per_identity):
            for t in range(0, 120, 7):
                lm = heads.landmarks(identity, video, t, 64)
                assert (lm >= 0).all() and (lm <= 63).all(), (identity, video, t)
                eyes, mouth = lm[36:48, 1].mean(), lm[48:68, 1].mean()
                brows, nose_tip, chin = lm[17:27, 1].mean(), lm[30, 1], lm[8, 1]
                assert brows < eyes < nose_tip < mouth < chin
                assert lm[36:42, 0].mean() < lm[42:48, 0].mean()  # right eye is on the image's left


def test_landmarks_match_the_rendered_face(heads: SyntheticHeads) -> None:
    img, lm = heads.render(3, 0, 0, 128)
    # the jaw's region is the face, not background; the eye's centre is not skin
    face = np.zeros((128, 128), np.uint8)
    cv2.fillConvexPoly(face, cv2.convexHull(np.rint(lm[:17]).astype(np.int32)), 1)
    inside, border = img[face > 0].mean(0), np.concatenate([img[:, 0], img[:, -1]]).mean(0)
    assert np.abs(inside - border).max() > 10
    x, y = np.rint(lm[[36, 37, 38, 39, 40, 41]].mean(0)).astype(int)
    eye, cheek = img[y, x].astype(int), img[int(lm[2, 1]), int((lm[2, 0] + lm[31, 0]) / 2)].astype(int)
    assert np.abs(eye - cheek).max() > 15


def test_motion_moves_mouth_and_eyes(heads: SyntheticHeads) -> None:
    gaps = np.array([np.linalg.norm(heads.landmarks(0, 0, t, 128)[66] - heads.landmarks(0, 0, t, 128)[62])
                     for t in range(64)])
    assert gaps.max() - gaps.min() > 3                      # the mouth opens and closes
    eye_h = np.array([heads.landmarks(0, 0, t, 128)[[37, 38]][:, 1].mean() for t in range(64)])
    lids = np.array([np.abs(heads.landmarks(0, 0, t, 128)[41, 1] - heads.landmarks(0, 0, t, 128)[37, 1])
                     for t in range(64)])
    assert lids.min() < 0.3 * lids.max()                    # a blink happens within 64 frames
    assert np.ptp(eye_h) > 0.5                              # the head moves
    f0, _ = heads.render(0, 0, 0, 64)
    f1, _ = heads.render(0, 0, 1, 64)
    assert 0 < np.abs(f0.astype(int) - f1).mean() < 40      # consecutive frames: similar but not equal


def test_bad_render_arguments(heads: SyntheticHeads) -> None:
    with pytest.raises(ValueError, match="identity 99"):
        heads.render(99, 0, 0, 64)
    with pytest.raises(ValueError, match="video 5"):
        heads.render(0, 5, 0, 64)
    with pytest.raises(ValueError, match="size"):
        heads.render(0, 0, 0, 4)


# ---------------------------------------------------------------- dataset

def test_sample_dict(dm: SyntheticDataModule) -> None:
    raw = dm.train_set[5]  # the training split goes to the device as uint8; the module converts it there
    assert raw["frames"].dtype == raw["landmark_images"].dtype == torch.uint8
    s = batch_to_float(raw)
    torch.testing.assert_close(s["frames"], from_uint8(raw["frames"].movedim(-3, -1).numpy()))
    K, H = 3, 64
    assert s["frames"].shape == (K + 1, 3, H, H) and s["frames"].dtype == torch.float32
    assert s["landmark_images"].shape == (K + 1, 3, H, H) and s["landmark_images"].dtype == torch.float32
    assert s["landmarks"].shape == (K + 1, 68, 2) and s["landmarks"].dtype == torch.float32
    for key in ("frames", "landmark_images"):
        assert s[key].min() >= -1 and s[key].max() <= 1
    assert s["frames"].std() > 0.1
    assert s["video_index"].dtype == torch.int64 and s["video_index"].ndim == 0
    assert int(s["video_index"]) == 5 % dm.num_videos
    assert s["person_id"] == "syn0002" and s["video_id"] == "syn0002/v01"
    assert dm.video_ids[int(s["video_index"])] == s["video_id"]


def test_landmark_images_are_drawn_from_landmarks(dm: SyntheticDataModule) -> None:
    s = batch_to_float(dm.train_set[3])
    for k in range(s["frames"].shape[0]):
        expect = landmark_image_tensor(s["landmarks"][k].numpy(), 64)
        torch.testing.assert_close(s["landmark_images"][k], expect)


def test_items_are_deterministic_and_use_the_full_index(dm: SyntheticDataModule) -> None:
    ds = dm.train_set
    n = ds.num_videos
    a, b = ds[7], ds[7]
    torch.testing.assert_close(a["frames"], b["frames"])
    other = SyntheticDataModule(num_identities=10, videos_per_identity=2, test_identities=3,
                                frames_per_video=12, heldout_frames=6, K=3, image_size=64, batch_size=4,
                                seed=1)
    torch.testing.assert_close(other.train_set[7]["frames"], a["frames"])
    later = ds[7 + 3 * n]  # the same video in a later epoch: other frames
    assert later["video_id"] == a["video_id"]
    assert not np.array_equal(ds.frame_indices(7), ds.frame_indices(7 + 3 * n))
    idx = ds.frame_indices(11)
    assert len(set(idx.tolist())) == 4 and idx.min() >= 0 and idx.max() < 12
    with pytest.raises(IndexError):
        ds[-1]


def test_splits_by_identity(dm: SyntheticDataModule) -> None:
    train = {dm.train_set[i]["person_id"] for i in range(dm.train_set.num_videos)}
    test = {dm.test_set[i]["person_id"] for i in range(dm.test_set.num_videos)}
    assert train == {f"syn{i:04d}" for i in range(7)}
    assert test == {"syn0007", "syn0008", "syn0009"}
    assert train.isdisjoint(test)
    assert dm.num_videos == 14 and len(dm.video_ids) == 14
    assert dm.test_video_ids == [f"syn{i:04d}/v{v:02d}" for i in (7, 8, 9) for v in (0, 1)]
    # validation: same videos / W rows as training, held-out frames only
    assert dm.val_set.video_ids == dm.train_set.video_ids
    for i in range(dm.val_set.num_videos):
        t = dm.val_set.frame_indices(i)
        assert t.min() >= 12 and t.max() < 18
        assert int(dm.val_set[i]["video_index"]) == dm.video_ids.index(dm.val_set[i]["video_id"])
    for i in range(50):
        assert dm.train_set.frame_indices(i).max() < 12


def test_loaders_and_frames_of(dm: SyntheticDataModule) -> None:
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (4, 4, 3, 64, 64) and batch["video_index"].shape == (4,)
    val = [b["video_id"] for b in dm.val_dataloader()]
    assert sum(val, []) == dm.video_ids                   # deterministic order
    test_batch = next(iter(dm.test_dataloader()))
    assert test_batch["person_id"][0] == "syn0007"
    clip = dm.frames_of("syn0008/v01", [0, 40, 41])
    assert clip["frames"].shape == (3, 3, 64, 64) and clip["landmarks"].shape == (3, 68, 2)
    img, lm = dm.heads.render(8, 1, 40, 64)
    torch.testing.assert_close(clip["landmarks"][1], torch.from_numpy(np.array(lm)))
    expect = torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(clip["frames"][1], expect)
    assert dm.frames_of("syn0001/v00", [2], image_size=128)["frames"].shape == (1, 3, 128, 128)
    with pytest.raises(ValueError, match="syn0003/v01"):
        dm.frames_of("id0001/xyz", [0])
    with pytest.raises(ValueError, match="not in this population"):
        dm.frames_of("syn0042/v00", [0])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(K=12, frames_per_video=12), r"K=12 needs K\+1=13 frames but videos have 12; lower K"),
        (dict(K=6, frames_per_video=32, heldout_frames=4), "heldout_frames=4"),
        (dict(num_identities=5, test_identities=5), "test_identities=5"),
        (dict(test_identities=0), "test_identities=0"),
        (dict(K=0), "K must be"),
    ],
)
def test_bad_settings_raise(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticDataModule(**{"num_identities": 10, "test_identities": 2, **kwargs})


def test_dataset_rejects_too_large_K(heads: SyntheticHeads) -> None:
    with pytest.raises(ValueError, match=r"K=8 needs K\+1=9 frames but videos have 6"):
        SyntheticTalkingHeads(heads, [0, 1], K=8, image_size=64, frames_per_video=6)


# ---------------------------------------------------------------- sampler

def test_epoch_sampler() -> None:
    s = EpochSampler(20, seed=3)
    e0 = list(s)
    assert list(s) == e0 and len(s) == 20 and sorted(e0) == list(range(20))
    s.set_epoch(1)
    e1 = list(s)
    assert sorted(e1) == list(range(20, 40))
    assert [i - 20 for i in e1] != e0
    s.set_epoch(0)
    assert list(s) == e0
    assert list(EpochSampler(20, seed=4)) != e0
    assert list(EpochSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


class _Recorder(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: list[list[str]] = []

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        self.seen.append(list(batch["video_id"]))
        return (self.w * batch["frames"].float().mean()).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_lightning_sets_the_epoch() -> None:
    dm = SyntheticDataModule(num_identities=6, videos_per_identity=2, test_identities=1, frames_per_video=8,
                             heldout_frames=4, K=2, image_size=32, batch_size=10, seed=2)
    model = _Recorder()
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    expected = []
    for epoch in (0, 1):
        sampler = EpochSampler(10, seed=2)
        sampler.set_epoch(epoch)
        expected.append([dm.train_set[i]["video_id"] for i in sampler])
    assert model.seen == expected
    assert model.seen[0] != model.seen[1]
