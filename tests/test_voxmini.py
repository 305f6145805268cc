"""The real pipeline on real faces: voxmini (../shared/data/voxmini) preprocessed with dlib, then streamed.

Skipped with a reason where voxmini is absent (a user's clone). The preprocessing runs once per session
(``voxmini_shards`` in conftest.py, about 10 s on 2 cores) and is shared by these tests.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_modules.preprocess import PreprocessConfig, preprocess
from data_modules.shards import ShardReader, iter_shard, load_manifest
from data_modules.voxceleb import VoxCeleb2DataModule

pytestmark = pytest.mark.voxmini

EYES, MOUTH = slice(36, 48), slice(48, 68)


def test_all_of_voxmini_is_preprocessed_with_dlib(voxmini_shards):
    out, report = voxmini_shards
    assert report.videos_total == 27 and report.kept + len(report.skipped) == 27 and report.complete
    reasons = {s["video_id"]: s["reason"] for s in report.skipped}
    # id90014 is a full-body dance clip: dlib finds its ~55 px face (upsampled search), refused as too small
    assert list(reasons) == ["id90014/s13/00001"], report.summary()
    assert reasons["id90014/s13/00001"].startswith("face too small (")
    assert reasons["id90014/s13/00001"].endswith("< 80 px)")
    m = load_manifest(out)
    assert m.num_clips == 26 and len(m.persons) == 13 and m.backend == "dlib" and m.image_size == 256
    assert m.num_videos == 13  # one YouTube video per person, 1-3 utterances each
    assert report.frames_written == sum(v.num_frames for v in m.videos) >= 26 * 12


def test_landmarks_on_real_faces_are_plausible(voxmini_shards):
    out, _ = voxmini_shards
    m = load_manifest(out)
    frames = 0
    for shard in m.shards:
        for sample in iter_shard(out / shard):
            pts, vid = sample.landmarks, sample.meta["video_id"]
            assert pts.shape[1:] == (68, 2)
            assert (pts >= 0).all() and (pts < 256).all(), f"{vid}: a point leaves the crop"
            assert (pts[:, EYES, 1].mean(1) < pts[:, MOUTH, 1].mean(1)).all(), f"{vid}: eyes below mouth"
            assert (pts[:, 36, 0] < pts[:, 45, 0]).all(), f"{vid}: eye corners swapped"
            assert (pts[:, 30, 1] > pts[:, EYES, 1].mean(1)).all(), f"{vid}: nose tip above the eyes"
            width = pts[:, 16, 0] - pts[:, 0, 0]
            assert (width > 60).all() and (width < 220).all(), f"{vid}: face size in the crop"
            frames += len(pts)
    assert frames == sum(v.num_frames for v in m.videos)


def test_the_small_face_is_kept_with_a_lower_min_face(voxmini_dir, tmp_path):
    clip = voxmini_dir / "dev" / "mp4" / "id90014" / "s13" / "00001.mp4"
    cfg = PreprocessConfig(size=128, frames_per_video=6, min_face=40)
    report = preprocess(clip, tmp_path, cfg, backend="dlib", layout="video", progress=False)
    assert report.kept == 1, report.summary()
    m = load_manifest(tmp_path)
    sample = ShardReader(m).read(m.videos[0].video_id)
    assert 40 <= sample.meta["face_width"] < 80
    pts = sample.landmarks
    assert (pts >= 0).all() and (pts < 128).all()
    assert (pts[:, EYES, 1].mean(1) < pts[:, MOUTH, 1].mean(1)).all()


def test_datamodule_streams_voxmini(voxmini_shards):
    out, _ = voxmini_shards
    dm = VoxCeleb2DataModule(out, K=8, image_size=256, batch_size=2, num_workers=0, test_fraction=0.2,
                             augment={"HorizontalFlip": {"p": 0.5}})
    assert len(dm.test_persons) == 3 and dm.num_videos == 13  # W rows: videos, not the 26 utterances
    assert max(len(u.clips) for u in dm.units) == 3
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (2, 9, 3, 256, 256)
    assert not set(batch["person_id"]) & set(dm.test_persons)


def test_a_few_meta_learning_steps_from_voxmini_shards(voxmini_shards):
    import pytorch_lightning as pl
    from helpers import tiny_module

    out, _ = voxmini_shards
    pl.seed_everything(0, verbose=False)
    dm = VoxCeleb2DataModule(out, K=2, image_size=32, batch_size=2, num_workers=0, test_fraction=0.2)
    module = tiny_module(num_videos=dm.num_videos)
    w_before = module.discriminator.W.weight.detach().clone()
    seen: list[int] = []
    step = module.training_step

    def spy(batch, batch_idx):
        seen.extend(batch["video_index"].tolist())
        return step(batch, batch_idx)

    module.training_step = spy
    trainer = pl.Trainer(accelerator="cpu", max_steps=6, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    assert module.iteration == 3
    w_after = module.discriminator.W.weight.detach()
    assert torch.isfinite(w_after).all() and not torch.equal(w_before, w_after)
    # (every row of W / sigma(W) moves a little through sigma, as with FSTH's spectrally normalised table)
    test_rows = {v.index for v in dm.test_videos}
    assert seen and not test_rows & set(seen), "test persons' videos are never trained on"
    assert np.isfinite(module.reconstruct(next(iter(dm.val_dataloader()))).detach().numpy()).all()
