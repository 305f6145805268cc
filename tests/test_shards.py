"""Shard format: WebDataset-readable, deterministic, atomic; manifest errors; random access."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_modules.shards import (
    MANIFEST, Manifest, ManifestError, ShardReader, VideoRecord, VideoSample, decode_jpeg, encode_jpeg,
    iter_shard, load_manifest, remove_partial, sample_key, write_shard)


def _samples(n: int = 3, frames: int = 4, size: int = 32) -> list[VideoSample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        vid = f"id{i:05d}/yt.{i}/00001"
        jpgs = [encode_jpeg(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(frames)]
        pts = rng.uniform(0, size, (frames, 68, 2)).astype(np.float32)
        meta = {"video_id": vid, "person_id": f"id{i:05d}", "frame_indices": list(range(frames))}
        out.append(VideoSample(sample_key(vid), jpgs, pts, meta))
    return out


def test_sample_key_has_no_slash_or_dot():
    assert sample_key("id00012/a.b-c_d/00001") == "id00012__a_b-c_d__00001"


def test_round_trip_and_webdataset_compatibility(tmp_path):
    import webdataset as wds

    samples = _samples()
    write_shard(tmp_path / "shard-000000.tar", samples)
    back = list(iter_shard(tmp_path / "shard-000000.tar"))
    assert [b.key for b in back] == [s.key for s in samples]
    for a, b in zip(samples, back):
        assert a.frames == b.frames and a.meta == b.meta
        np.testing.assert_array_equal(a.landmarks, b.landmarks)
    ds = wds.WebDataset(str(tmp_path / "shard-000000.tar"), shardshuffle=False, empty_check=False)
    raw = list(ds)
    assert [r["__key__"] for r in raw] == [s.key for s in samples]
    assert sorted(k for k in raw[0] if k.endswith(".jpg")) == [f"{i:04d}.jpg" for i in range(4)]
    assert json.loads(raw[1]["json"])["video_id"] == "id00001/yt.1/00001"
    assert decode_jpeg(raw[0]["0000.jpg"]).shape == (32, 32, 3)


def test_writes_are_deterministic(tmp_path):
    write_shard(tmp_path / "a.tar", _samples())
    write_shard(tmp_path / "b.tar", _samples())
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_a_failed_write_leaves_nothing_a_reader_would_take(tmp_path):
    good = _samples(1)
    bad = VideoSample("k", [b"x"], np.zeros((1, 68, 2), np.float32), {"not json": {1, 2}})  # a set: not JSON
    write_shard(tmp_path / "shard-000000.tar", good)
    with pytest.raises(TypeError):
        write_shard(tmp_path / "shard-000001.tar", good + [bad])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shard-000000.tar"]
    (tmp_path / "shard-000002.tar.tmp").write_bytes(b"half")
    assert [p.name for p in remove_partial(tmp_path)] == ["shard-000002.tar.tmp"]
    assert len(list(iter_shard(tmp_path / "shard-000000.tar"))) == 1


def test_manifest_round_trip_and_random_access(tmp_path):
    samples = _samples(4)
    write_shard(tmp_path / "shard-000000.tar", samples[:2])
    write_shard(tmp_path / "shard-000001.tar", samples[2:])
    records = [
        VideoRecord(i, s.meta["video_id"], s.meta["person_id"], f"shard-00000{i // 2}.tar", s.key, 4, "train")
        for i, s in enumerate(samples)
    ]
    Manifest(tmp_path, 32, records, ["shard-000000.tar", "shard-000001.tar"], [], "dlib").save()
    m = load_manifest(tmp_path)
    assert m.videos == records and m.num_videos == 4 and m.complete
    data = json.loads((tmp_path / MANIFEST).read_text())
    assert data["num_frames"] == 16 and data["persons"]["id00002"] == ["id00002/yt.2/00001"]
    got = ShardReader(m).read("id00003/yt.3/00001")
    assert got.frames == samples[3].frames
    np.testing.assert_array_equal(got.landmarks, samples[3].landmarks)
    with pytest.raises(KeyError, match="not in"):
        ShardReader(m).read("id99999/x/1")


def test_manifest_errors_say_how_to_make_one(tmp_path):
    with pytest.raises(ManifestError, match="does not exist: run `make preprocess"):
        load_manifest(tmp_path / "nope")
    with pytest.raises(ManifestError, match="has no manifest.json"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text("{broken")
    with pytest.raises(ManifestError, match="unreadable"):
        load_manifest(tmp_path)
