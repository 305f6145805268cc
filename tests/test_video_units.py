"""One W row per video: a VoxCeleb tree with several utterances per video (``id/v/00001.mp4``, ``00002.mp4``) gives
one row per ``person/video`` and samples whose K+1 frames come from all of a video's utterances; ``data.unit=utterance``
keeps a row per clip; old manifests are re-indexed or refused; a per-utterance checkpoint is refused on resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import OracleDetector, synthetic_heads, write_mp4

from data_modules.shards import Manifest, ManifestError, ShardReader, UnitError, VideoRecord, load_manifest
from data_modules.sources import video_of
from data_modules.voxceleb import VoxCeleb2DataModule, VoxCelebStream

FRAMES = 8  # per utterance
#: (person, video) -> utterances: id00001/v1 is cut across shards 0 and 1 (3 clips per shard)
UTTERANCES = {(1, 0): 2, (1, 1): 2, (2, 0): 2, (2, 1): 2, (3, 0): 2, (3, 1): 3}


@pytest.fixture(scope="module")
def multi_vox(tmp_path_factory):
    """``(src, oracle, shard folder, cfg)``: 3 persons x 2 videos x 2-3 utterances of 8 frames each, every
    utterance its own stretch of motion (so its landmarks tell it apart), preprocessed 3 clips per shard."""
    from data_modules.preprocess import PreprocessConfig, preprocess

    src = tmp_path_factory.mktemp("multi_vox") / "dev" / "mp4"
    heads = synthetic_heads(3, 2)
    oracle = OracleDetector()
    for (i, j), n in UTTERANCES.items():
        for u in range(n):
            imgs, pts = zip(*(heads.render(i - 1, j, float(u * FRAMES + t), 96) for t in range(FRAMES)))
            write_mp4(src / f"id{i:05d}" / f"v{j}" / f"{u + 1:05d}.mp4", np.stack(imgs))
            oracle.add(np.stack(imgs), np.stack(pts))
    out = tmp_path_factory.mktemp("multi_shards")
    cfg = PreprocessConfig(size=64, frames_per_video=FRAMES, min_face=20, videos_per_shard=3)
    report = preprocess(src, out, cfg, detector=oracle, workers=0, progress=False)
    assert report.complete and report.kept == 13, report.summary()
    return src, oracle, out, cfg


def _clip_of(manifest: Manifest) -> callable:
    """landmarks (68, 2) of a frame -> the id of the one clip that stores them."""
    reader = ShardReader(manifest)
    stored = {c.video_id: reader.read(c.video_id).landmarks for c in manifest.videos}

    def which(points: np.ndarray) -> str:
        hits = [cid for cid, lm in stored.items() if any(np.array_equal(points, q) for q in lm)]
        assert len(hits) == 1, f"frame found in {hits}"
        return hits[0]

    return which


def test_the_manifest_names_each_utterances_video(multi_vox):
    _, _, out, _ = multi_vox
    data = json.loads((out / "manifest.json").read_text())
    assert data["format"] == "talkinghead-shards/2" and data["num_clips"] == 13 and data["num_videos"] == 6
    assert all(v["video"] == v["video_id"].rsplit("/", 1)[0] for v in data["videos"])
    assert video_of("id00012/abc/00001") == "id00012/abc" and video_of("id1/yt#10#90") == "id1/yt"
    assert video_of("no-video") is None


def test_one_w_row_per_video_and_frames_from_all_its_utterances(multi_vox):
    _, _, out, _ = multi_vox
    dm = VoxCeleb2DataModule(out, K=3, image_size=64, batch_size=1, num_workers=0, test_persons=["id00003"])
    assert dm.manifest.num_clips == 13 and dm.num_videos == 6  # W rows: person/video pairs, not utterances
    assert [u.video_id for u in dm.units] == [f"id{i:05d}/v{j}" for i, j in UTTERANCES]
    assert [len(u.clips) for u in dm.units] == list(UTTERANCES.values())
    assert len(dm.units[1].shards) == 2, "precondition: id00001/v1 is cut across two shards"
    which = _clip_of(dm.manifest)
    ds = dm.train_dataset()
    drawn: dict[str, set[str]] = {}
    mixed = samples = 0
    for _ in range(4):  # epochs
        for s in ds:
            unit = dm.units[int(s["video_index"])]
            assert s["video_id"] == unit.video_id and s["person_id"] == unit.person_id != "id00003"
            clips = [which(p) for p in s["landmarks"].numpy()]
            assert all(video_of(c) == unit.video_id for c in clips), (unit.video_id, clips)
            drawn.setdefault(unit.video_id, set()).update(clips)
            mixed += len(set(clips)) > 1
            samples += 1
    assert samples == 16 and mixed >= 4, f"only {mixed} of {samples} samples mix utterances"
    assert drawn == {u.video_id: {c.video_id for c in u.clips} for u in dm.train_videos}, "every utterance is used"
    val = dm.val_dataset()  # validation samples too draw over the whole video
    assert len(val) == 2 and {video_of(which(p)) for p in val[1]["landmarks"].numpy()} == {"id00003/v1"}


def test_two_workers_read_every_video_once_even_one_cut_across_shards(multi_vox):
    _, _, out, _ = multi_vox
    dm = VoxCeleb2DataModule(out, K=2, image_size=32, batch_size=1, num_workers=2, test_persons=["id00003"])
    seen = [b["video_id"][0] for b in dm.train_dataloader()]
    assert sorted(seen) == [u.video_id for u in dm.train_videos] and len(seen) == 4


def test_unit_utterance_keeps_a_row_per_clip(multi_vox):
    _, _, out, _ = multi_vox
    dm = VoxCeleb2DataModule(out, K=3, image_size=64, num_workers=0, test_persons=["id00003"], unit="utterance")
    assert dm.num_videos == 13 and [u.video_id for u in dm.units] == [c.video_id for c in dm.manifest.videos]
    which = _clip_of(dm.manifest)
    for s in dm.train_dataset():
        assert dm.manifest.videos[int(s["video_index"])].video_id == s["video_id"]
        assert {which(p) for p in s["landmarks"].numpy()} == {s["video_id"]}
    with pytest.raises(UnitError, match="data.unit must be one of video, utterance") as info:
        VoxCeleb2DataModule(out, num_workers=0, unit="clip")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("shard_size", [1, 5])  # many shards: split by shard; few: split by video
def test_ranks_and_workers_never_share_a_video_of_several_clips(tmp_path, shard_size):
    recs = [VideoRecord(i, f"id{i // 6:05d}/v{i // 2 % 3}/{i % 2 + 1:05d}", f"id{i // 6:05d}",
                        f"shard-{i // shard_size:06d}.tar", f"k{i}", 10) for i in range(60)]
    m = Manifest(tmp_path, 64, recs, sorted({r.shard for r in recs}))
    units = m.units("video")
    assert len(units) == 30 and all(len(u.clips) == 2 for u in units)
    for epoch in (0, 1):
        slots, lengths = [], []
        for rank in range(2):
            ds = VoxCelebStream(m, units, 2, 32, seed=1, rank=rank, world_size=2)
            lengths.append(sum(ds.assignment(w, 3, epoch)[1] for w in range(3)))
            slots += [{u.video_id for u in ds.assignment(w, 3, epoch)[0]} for w in range(3)]
        assert lengths == [15, 15] and sum(map(len, slots)) == len(set().union(*slots)) == 30


def _strip_video_field(folder: Path) -> None:
    """Make ``folder`` look as preprocessing wrote it before the video field (manifest and ledger)."""
    data = json.loads((folder / "manifest.json").read_text())
    data["format"] = "talkinghead-shards/1"
    data.pop("num_clips")
    for v in data["videos"]:
        del v["video"]
    (folder / "manifest.json").write_text(json.dumps(data))
    lines = [json.loads(line) for line in (folder / "ledger.jsonl").read_text().splitlines()]
    for entry in lines:
        for v in entry["videos"]:
            v.pop("video")
    (folder / "ledger.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))


def test_an_old_manifest_is_reindexed_from_its_clip_ids_and_preprocess_rewrites_it(multi_vox, tmp_path):
    from data_modules.preprocess import preprocess

    src, oracle, out, cfg = multi_vox
    old = tmp_path / "old"
    shutil.copytree(out, old)
    _strip_video_field(old)
    assert load_manifest(old).reindexed
    with pytest.warns(UserWarning, match=r"old/manifest.json predates the per-video field.*re-run `make preprocess`"):
        dm = VoxCeleb2DataModule(old, num_workers=0)
    assert dm.num_videos == 6 and [u.video_id for u in dm.units] == [f"id{i:05d}/v{j}" for i, j in UTTERANCES]
    # the fix the warning names: the same preprocess command rewrites the manifest, reading no video again
    report = preprocess(src, old, cfg, detector=oracle, workers=0, progress=False)
    assert report.videos_read == 0 and report.complete
    data = json.loads((old / "manifest.json").read_text())
    assert data["format"] == "talkinghead-shards/2" and all("video" in v for v in data["videos"])
    assert not load_manifest(old).reindexed


def test_an_old_manifest_whose_ids_name_no_video_is_refused_in_one_line(tmp_path):
    entry = {"person_id": "id00001", "shard": "shard-000000.tar", "num_frames": 10, "split": None}
    data = {"format": "talkinghead-shards/1", "image_size": 64, "shards": ["shard-000000.tar"],
            "videos": [{**entry, "video_id": f"clip{c}", "key": f"clip{c}"} for c in "ab"]}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError) as info:
        VoxCeleb2DataModule(tmp_path, num_workers=0)
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path) in msg and "predates the per-video field" in msg
    assert "re-run `make preprocess`" in msg and "data.unit=utterance" in msg
    assert VoxCeleb2DataModule(tmp_path, num_workers=0, unit="utterance").num_videos == 2


def test_a_per_utterance_checkpoint_is_refused_with_the_way_on(tmp_path):
    from helpers import tiny_module
    from omegaconf import OmegaConf

    from talkinghead.errors import ConfigError
    from talkinghead.training.train import check_resumable

    vox2 = "data_modules.voxceleb.VoxCeleb2DataModule"
    ckpt = tmp_path / "last.ckpt"
    # written before data.unit existed: a VoxCeleb W table of one row per utterance (13 clips)
    torch.save({"hyper_parameters": {"config": {"data": {"_target_": vox2, "root": "/shards"}}},
                "state_dict": tiny_module(num_videos=13, size=16).state_dict()}, ckpt)
    now = OmegaConf.create({"model": {}, "data": {"_target_": vox2, "unit": "video"}, "run_dir": str(tmp_path)})
    with pytest.raises(ConfigError) as info:
        check_resumable(ckpt, now, num_videos=6)
    msg = str(info.value)
    assert "\n" not in msg and "W table made per utterance (13 rows) but data.unit=video gives 6" in msg
    assert "resume=false" in msg and "data.unit=utterance" in msg
    check_resumable(ckpt, OmegaConf.merge(now, {"data": {"unit": "utterance"}}), num_videos=13)  # goes on
    with pytest.raises(ConfigError, match="W table of 13 videos but the data has 12"):  # same unit, other data
        check_resumable(ckpt, OmegaConf.merge(now, {"data": {"unit": "utterance"}}), num_videos=12)


def test_evaluation_takes_sources_and_targets_across_the_utterances_of_a_held_out_video(multi_vox):
    from omegaconf import OmegaConf

    from talkinghead.inference import shots
    from talkinghead.evaluation.evaluate import held_out_videos

    _, _, out, _ = multi_vox
    meta = OmegaConf.create({"model": {"image_size": 64}, "data": {
        "_target_": "data_modules.voxceleb.VoxCeleb2DataModule", "root": str(out), "K": 2, "image_size": 64,
        "test_persons": ["id00003"]}})
    assert held_out_videos(meta, None) == ["id00003/v0", "id00003/v1"]
    person = shots.resolve("id00003/v1", meta.data, 64)
    assert person.num_frames == 3 * FRAMES and person.video_ids == [f"id00003/v1/{u:05d}" for u in (1, 2, 3)]
    which = _clip_of(load_manifest(out))
    half = person.num_frames // 2  # evaluate: T sources over the first half, targets over the second
    sources = person.load(shots.evenly(half, 8))["landmarks"].numpy()
    targets = person.load(shots.evenly(person.num_frames - half, 8, offset=half))["landmarks"].numpy()
    assert {which(p) for p in sources} == {"id00003/v1/00001", "id00003/v1/00002"}
    assert {which(p) for p in targets} == {"id00003/v1/00002", "id00003/v1/00003"}
