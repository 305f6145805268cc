"""VoxCeleb DataModules: sample format, split by person, rank/worker partition, augmentation, configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_heads

from data_modules.shards import Manifest, VideoRecord
from data_modules.voxceleb import (
    IBUG68_FLIP, AugmentConfigError, DataRootError, VoxCeleb1DataModule, VoxCeleb2DataModule, VoxCelebStream,
    apply_augment, build_augment, partition, quotas)

AUG = {
    "HorizontalFlip": {"p": 0.5},
    "Affine": {"scale": [0.9, 1.1], "rotate": [-10, 10], "p": 1.0},
    "ColorJitter": {"brightness": 0.2, "p": 0.5},
}


def test_samples_have_the_common_format(synthetic_shards):
    root, _ = synthetic_shards
    dm = VoxCeleb2DataModule(root, K=3, image_size=48, batch_size=2, num_workers=0, test_persons=["id00004"],
                             augment=AUG)
    assert dm.num_videos == 8 and dm.train_persons == ["id00001", "id00002", "id00003"]
    raw = next(iter(dm.train_dataloader()))
    # training batches go to the device as uint8 (4x less traffic) and become [-1, 1] floats there
    assert raw["frames"].dtype == raw["landmark_images"].dtype == torch.uint8
    from talkinghead.visualize import batch_to_float

    batch = batch_to_float(raw)
    assert batch["frames"].shape == (2, 4, 3, 48, 48) and batch["frames"].dtype == torch.float32
    assert batch["landmark_images"].shape == (2, 4, 3, 48, 48)
    assert batch["landmarks"].shape == (2, 4, 68, 2) and batch["video_index"].dtype == torch.int64
    assert batch["frames"].min() >= -1 and batch["frames"].max() <= 1 and batch["landmark_images"].min() == -1
    for vid, idx, pid in zip(batch["video_id"], batch["video_index"], batch["person_id"]):
        rec = dm.units[int(idx)]  # the W row of a video (person/youtube id)
        assert rec.video_id == vid and rec.person_id == pid != "id00004"
    val = next(iter(dm.val_dataloader()))
    assert set(val["person_id"]) == {"id00004"} and val["frames"].shape == (2, 4, 3, 48, 48)
    again = next(iter(dm.val_dataloader()))
    assert torch.equal(val["frames"], again["frames"])  # validation samples are fixed


def test_landmark_images_are_drawn_from_the_landmarks(synthetic_shards):
    from talkinghead.landmarks.draw import landmark_image_tensor

    root, _ = synthetic_shards
    dm = VoxCeleb2DataModule(root, K=2, image_size=64, num_workers=0, augment=AUG)
    from talkinghead.visualize import batch_to_float

    s = batch_to_float(next(iter(dm.train_dataset())))
    for lmk_img, pts in zip(s["landmark_images"], s["landmarks"]):
        assert torch.allclose(lmk_img, landmark_image_tensor(pts.numpy(), 64), atol=1e-6)


def test_frames_of_a_test_person_for_fine_tuning(synthetic_shards):
    root, _ = synthetic_shards
    dm = VoxCeleb2DataModule(root, K=2, image_size=64, num_workers=0, test_persons=["id00004"])
    vid = dm.videos_of("id00004")[0].video_id
    frames, lmk = dm.frames_of(vid)
    assert frames.shape == (12, 64, 64, 3) and frames.dtype == np.uint8 and lmk.shape == (12, 68, 2)
    s = dm.sample_of(vid, [0, 5, 11])
    np.testing.assert_allclose(s["landmarks"].numpy(), lmk[[0, 5, 11]])
    assert s["frames"].shape == (3, 3, 64, 64)


def test_one_epoch_reads_every_training_video_once_with_two_workers(synthetic_shards):
    root, _ = synthetic_shards
    dm = VoxCeleb2DataModule(root, K=2, image_size=32, batch_size=1, num_workers=2, test_persons=["id00001"])
    seen = [b["video_id"][0] for b in dm.train_dataloader()]
    assert sorted(seen) == sorted(v.video_id for v in dm.train_videos) and len(seen) == 6


def _manifest(root: Path, persons: list[str], per_person: int = 2, shard_size: int = 3) -> Manifest:
    recs = []
    for p in persons:
        for j in range(per_person):
            i = len(recs)
            shard = f"shard-{i // shard_size:06d}.tar"
            recs.append(VideoRecord(i, f"{p}/v{j}/00001", p, shard, f"{p}__v{j}", 10, None))
    m = Manifest(root, 64, recs, sorted({r.shard for r in recs}))
    root.mkdir(parents=True, exist_ok=True)
    m.save()
    return m


@pytest.mark.parametrize("shard_size", [1, 5])  # many shards: split by shard; few: split by video
def test_ranks_and_workers_never_share_a_video(tmp_path, shard_size):
    m = _manifest(tmp_path, [f"id{i:05d}" for i in range(10)], 3, shard_size)
    world, workers = 2, 3
    for epoch in (0, 1):
        slots, lengths = [], []
        for rank in range(world):
            ds = VoxCelebStream(m, m.videos, 2, 32, seed=1, rank=rank, world_size=world)
            total = 0
            for w in range(workers):
                vids, quota = ds.assignment(w, workers, epoch)
                slots.append({v.video_id for v in vids})
                total += quota
                assert quota <= max(1, len(vids)) * ds.samples_per_video
            lengths.append(total)
        assert lengths == [15, 15]  # every rank yields the same number of samples
        union = set().union(*slots)
        assert sum(len(s) for s in slots) == len(union) == 30  # disjoint and covering
    ds = VoxCelebStream(m, m.videos, 2, 32, seed=1, rank=0, world_size=world)
    assert ds.assignment(0, workers, 0)[0] != ds.assignment(0, workers, 1)[0]  # changes between epochs


def test_partition_and_quotas():
    parts = [partition(10, s, 3, seed=0, epoch=0) for s in range(3)]
    assert sorted(sum(parts, [])) == list(range(10)) and sorted(map(len, parts)) == [3, 3, 4]
    assert quotas([3, 0, 1], 8) == [6, 0, 2] and sum(quotas([5, 4, 4], 7)) == 7


def test_stream_iteration_per_rank_is_disjoint(synthetic_shards):
    root, _ = synthetic_shards
    dm = VoxCeleb2DataModule(root, K=1, image_size=32, num_workers=0)
    got = []
    for rank in range(2):
        ds = VoxCelebStream(dm.manifest, dm.train_videos, 1, 32, rank=rank, world_size=2)
        got.append([s["video_id"] for s in ds])
    assert len(got[0]) == len(got[1]) == 4 and not set(got[0]) & set(got[1])


def test_split_by_person(tmp_path):
    _manifest(tmp_path / "v1", [f"id{n}" for n in (10268, 10269, 10270, 10309, 10310)])
    dm1 = VoxCeleb1DataModule(tmp_path / "v1", num_workers=0)
    assert dm1.test_persons == ["id10270", "id10309"] and dm1.num_videos == 10
    assert not {v.person_id for v in dm1.train_videos} & set(dm1.test_persons)

    m2 = _manifest(tmp_path / "v2", [f"id{i:05d}" for i in range(10)])
    recs = [
        VideoRecord(r.index, r.video_id, r.person_id, r.shard, r.key, r.num_frames,
                    "test" if r.person_id == "id00003" else "train")
        for r in m2.videos
    ]
    Manifest(m2.root, 64, recs, m2.shards).save()
    assert VoxCeleb2DataModule(m2.root, num_workers=0).test_persons == ["id00003"]
    assert VoxCeleb2DataModule(m2.root, num_workers=0, test_persons=["id00007"]).test_persons == ["id00007"]

    _manifest(tmp_path / "v3", [f"id{i:05d}" for i in range(10)])
    a = VoxCeleb2DataModule(tmp_path / "v3", num_workers=0, test_fraction=0.2, seed=3)
    b = VoxCeleb2DataModule(tmp_path / "v3", num_workers=0, test_fraction=0.2, seed=3)
    assert len(a.test_persons) == 2 and a.test_persons == b.test_persons
    assert VoxCeleb2DataModule(tmp_path / "v3", num_workers=0).test_persons == []  # dev only: all train


def test_missing_root_and_manifest_are_clear_errors(tmp_path):
    with pytest.raises(DataRootError, match=r"data.root is not set: run `make preprocess.*DATA=vox2 DATA_"):
        VoxCeleb2DataModule(None)
    with pytest.raises(DataRootError, match="DATA=vox1"):
        VoxCeleb1DataModule("???")
    with pytest.raises(FileNotFoundError, match="has no manifest.json"):
        VoxCeleb2DataModule(tmp_path)
    _manifest(tmp_path / "m", ["id00001"])
    with pytest.raises(AugmentConfigError, match="no transform 'Flipp'"):
        VoxCeleb2DataModule(tmp_path / "m", augment={"Flipp": {}})


def _dots(points: np.ndarray, size: int) -> np.ndarray:
    img = np.zeros((size, size, 3), np.uint8)
    for x, y in np.round(points).astype(int):
        img[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2] = 255
    return img


def test_augmentation_moves_landmarks_with_the_frame():
    _, pts = synthetic_heads(1, 1).render(0, 0, 0.0, 96)
    frames = np.stack([_dots(pts, 96)] * 3)
    lmk = np.stack([pts] * 3).astype(np.float32)
    aug = build_augment(
        {"HorizontalFlip": {"p": 1.0}, "Affine": {"rotate": [12, 12], "scale": [1.1, 1.1], "p": 1.0}})
    aug.set_random_seed(0)
    out_f, out_l = apply_augment(aug, frames, lmk)
    for f, p in zip(out_f, out_l):
        inside = [(x, y) for x, y in np.round(p).astype(int) if 1 <= x < 95 and 1 <= y < 95]
        assert len(inside) > 60
        assert np.mean([f[y - 1 : y + 2, x - 1 : x + 2].max() for x, y in inside]) > 200  # a dot under each
    np.testing.assert_allclose(out_l[0], out_l[2])  # one draw for all frames of the sample
    # after the flip, point 36 is still the image-left eye corner (the person's right eye), 45 the right one
    assert pts[36, 0] < pts[45, 0] and out_l[0, 36, 0] < out_l[0, 45, 0]
    assert sorted(IBUG68_FLIP.tolist()) == list(range(68))
    assert (IBUG68_FLIP[IBUG68_FLIP] == np.arange(68)).all()  # an involution


def test_hydra_configs_instantiate(synthetic_shards, monkeypatch):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from talkinghead.config import compose

    root, _ = synthetic_shards
    for name, cls in (("vox1", VoxCeleb1DataModule), ("vox2", VoxCeleb2DataModule)):
        overrides = [f"data={name}", "K=2", "seed=0", "model.image_size=32",
                     "model.landmarks=ibug68"]  # the real configs, composed (on 68-point shards)
        monkeypatch.delenv("DATA_ROOT", raising=False)
        with pytest.raises(InstantiationException, match=f"data.root is not set.*DATA={name}"):
            instantiate(compose("meta_learn", overrides).data)  # Hydra wraps the DataRootError, keeping its message
        monkeypatch.setenv("DATA_ROOT", str(root))
        dm = instantiate(compose("meta_learn", overrides).data, num_workers=0)
        assert isinstance(dm, cls) and dm.K == 2 and dm.image_size == 32 and dm.num_videos == 8
        assert dm.augment == {}, "the paper uses no augmentation: off by default"


def test_the_shards_landmark_set_must_be_the_models(tmp_path):
    """A manifest without a set is ibug68 (shards made before sets); another set than the model's: one line."""
    import json

    from talkinghead.landmarks.sets import LandmarkSetError

    m = _manifest(tmp_path / "m", ["id00001", "id00002"])
    data = json.loads((m.root / "manifest.json").read_text())
    assert data["landmarks"] == "ibug68"
    del data["landmarks"]  # as written before landmark sets
    (m.root / "manifest.json").write_text(json.dumps(data))
    assert VoxCeleb2DataModule(m.root, num_workers=0, landmarks="ibug68").landmarks == "ibug68"
    assert VoxCeleb2DataModule(m.root, num_workers=0).landmarks == "ibug68"  # a data config from before sets
    with pytest.raises(LandmarkSetError) as e:
        VoxCeleb2DataModule(m.root, num_workers=0, landmarks="ibug68+iris")
    assert "\n" not in str(e.value) and "ibug68+iris" in str(e.value) and "uses ibug68:" in str(e.value)


def test_flip_swaps_the_irises_too():
    from data_modules.voxceleb import IRIS72_FLIP

    assert (IRIS72_FLIP[IRIS72_FLIP] == np.arange(72)).all()
    assert IRIS72_FLIP[68:].tolist() == [70, 71, 68, 69]
