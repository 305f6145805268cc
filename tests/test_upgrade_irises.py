"""Irises in shards: ``make preprocess --landmark-set ibug68+iris`` writes them, and ``data_modules.upgrade_irises``
(``make upgrade-shards``) adds them to shards made with 68 points from the stored crops, which the VoxCeleb
DataModule of an iris model then reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_heads

from data_modules.preprocess import PreprocessConfig, PreprocessError, preprocess
from data_modules.shards import iter_shard, load_manifest
from data_modules.upgrade_irises import main as upgrade_main
from data_modules.upgrade_irises import upgrade_irises
from data_modules.voxceleb import VoxCeleb2DataModule
from talkinghead.crop import landmarks_to_crop
from talkinghead.landmarks.sets import IBUG68, IBUG68_IRIS, LandmarkSetError, iris_present

#: 2 persons x 2 videos x 8 frames of 256² heads, cut to 256² crops (eyes ~20 px wide: conftest's synthetic_vox,
#: 128² frames, leaves most eyes under the locator's 12 px)
SRC = {"identities": 2, "videos": 2, "frames": 8, "size": 256}
CFG = PreprocessConfig(size=256, frames_per_video=6, min_face=20, videos_per_shard=2)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, object]:
    from conftest import make_synthetic_vox

    root = tmp_path_factory.mktemp("vox256") / "dev" / "mp4"
    return root, make_synthetic_vox(root, **SRC)


@pytest.fixture(scope="module")
def shards68(tmp_path_factory, source) -> Path:
    src, oracle = source
    out = tmp_path_factory.mktemp("shards68")
    assert preprocess(src, out, CFG, detector=oracle, workers=0, progress=False).complete
    return out


def _exact_irises(sample) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    """The true iris centres of a clip of ``source`` (conftest.make_synthetic_vox, seed 0) in its crop."""
    heads = synthetic_heads(SRC["identities"], SRC["videos"], 0)
    ident, vid = int(sample.meta["person_id"][2:]) - 1, int(sample.meta["video_id"].split("/")[1][1:])
    exact = [heads.irises(ident, vid, float(t), SRC["size"]) for t in sample.meta["frame_indices"]]
    centres = np.stack([landmarks_to_crop(c, np.array(sample.meta["crop_box"]), CFG.size) for c, _, _ in exact])
    return centres, np.stack([d for _, _, d in exact])


def _check_irises(root: Path) -> None:
    """Every clip's points are (T, 72, 2); the irises found lie within a few px of the drawn ones (the locator: ~2 % of the eye distance), most are found."""
    errs, found, drawn_n = [], 0, 0
    for shard in load_manifest(root).shards:
        for s in iter_shard(root / shard):
            assert s.landmarks.shape[1:] == (72, 2)
            centres, drawn = _exact_irises(s)
            ok = iris_present(s.landmarks)
            assert not (ok & ~drawn).any()  # an iris the renderer did not draw is never found
            errs += list(np.linalg.norm(s.landmarks[:, [68, 70]] - centres, axis=-1)[ok])
            found, drawn_n = found + int(ok.sum()), drawn_n + int(drawn.sum())
    print(f"{root.name}: {found}/{drawn_n} drawn irises found, error median {np.median(errs):.2f} px, "
          f"max {np.max(errs):.2f} px (256² crops)")
    assert found >= 0.8 * drawn_n and np.median(errs) < 2.0 and np.max(errs) < 4.0


def test_the_upgrade_adds_irises_the_datamodule_reads(shards68, source, tmp_path, capsys) -> None:
    src, oracle = source
    root = tmp_path / "shards"
    shutil.copytree(shards68, root)
    before = {s.key: s for sh in load_manifest(root).shards for s in iter_shard(root / sh)}
    # an iris model on 68-point shards: one line naming the upgrade command
    with pytest.raises(LandmarkSetError) as e:
        VoxCeleb2DataModule(root, num_workers=0, landmarks=IBUG68_IRIS)
    assert "\n" not in str(e.value) and f"make upgrade-shards SHARDS={root}" in str(e.value), str(e.value)

    assert upgrade_main([str(root)]) == 0
    assert "shards given irises" in capsys.readouterr().out
    manifest = load_manifest(root)
    assert manifest.landmarks == IBUG68_IRIS
    _check_irises(root)
    for sh in manifest.shards:  # the frames, metadata and 68 points are kept as they were
        for s in iter_shard(root / sh):
            b = before[s.key]
            assert s.frames == b.frames and s.meta == b.meta
            np.testing.assert_array_equal(s.landmarks[:, :68], b.landmarks)
    dm = VoxCeleb2DataModule(root, K=2, image_size=64, batch_size=2, num_workers=0, landmarks=IBUG68_IRIS,
                             test_persons=["id00002"])
    frames, points = dm.frames_of(dm.videos_of("id00002")[0].video_id)
    assert points.shape == (6, 72, 2) and iris_present(points).any()
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["landmarks"].shape[-2:]) == (72, 2)
    with pytest.raises(LandmarkSetError):  # and a 68-point model no longer matches it
        VoxCeleb2DataModule(root, num_workers=0, landmarks=IBUG68)

    # again: nothing to do; preprocessing continues the folder only with the iris set
    again = upgrade_irises(root)
    assert again.shards_upgraded == 0 and again.shards_kept == len(manifest.shards)
    with pytest.raises(PreprocessError, match="landmark_set"):
        preprocess(src, root, CFG, detector=oracle, workers=0, progress=False)
    cfg = PreprocessConfig(**{**CFG.__dict__, "landmark_set": IBUG68_IRIS})
    assert preprocess(src, root, cfg, detector=oracle, workers=0, progress=False).videos_read == 0
    assert load_manifest(root).landmarks == IBUG68_IRIS


def test_preprocessing_writes_irises_when_asked(source, tmp_path) -> None:
    src, oracle = source
    out = tmp_path / "iris-shards"
    cfg = PreprocessConfig(**{**CFG.__dict__, "landmark_set": IBUG68_IRIS})
    assert preprocess(src, out, cfg, detector=oracle, workers=0, progress=False).complete
    assert json.loads((out / "manifest.json").read_text())["landmarks"] == IBUG68_IRIS
    assert json.loads((out / "config.json").read_text())["landmark_set"] == IBUG68_IRIS
    _check_irises(out)
    assert VoxCeleb2DataModule(out, num_workers=0, landmarks=IBUG68_IRIS).landmarks == IBUG68_IRIS


def test_an_upgrade_of_no_shard_folder_is_one_line(tmp_path, capsys) -> None:
    assert upgrade_main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "nowhere" in err, err
