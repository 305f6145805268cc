"""Preprocessing: layouts, face track + crop, bad input, kill/resume, full disk, CLI, landmark backends."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO, OracleDetector, make_synthetic_vox, synthetic_heads, write_mp4

import data_modules.preprocess as pp
from data_modules.preprocess import (
    PreprocessConfig, PreprocessError, crop_frame, landmarks_to_crop, preprocess)
from data_modules.shards import MANIFEST, ShardReader, iter_shard, load_manifest
from data_modules.sources import LayoutError, discover, even_indices, read_video

CFG = PreprocessConfig(size=64, frames_per_video=12, min_face=20, videos_per_shard=2)


# ---------------------------------------------------------------------------------------------- sources
def test_discover_recognises_each_layout(tmp_path, synthetic_vox):
    src, _ = synthetic_vox
    clips = discover(src.parent.parent)  # a folder above dev/mp4 works too
    expected = sorted(f"id{i:05d}/v{j}/00001" for i in range(1, 5) for j in range(2))
    assert [c.video_id for c in clips] == expected
    assert {c.split for c in clips} == {"train"}  # from the dev/ folder

    one = next(src.rglob("*.mp4"))
    vp = tmp_path / "vp"
    (vp / "test").mkdir(parents=True)
    shutil.copy(one, vp / "test" / "alice#yt1#000010#000050.mp4")
    frames_dir = vp / "train" / "bob#yt2#0#20.mp4"
    frames_dir.mkdir(parents=True)
    for t in range(3):
        cv2.imwrite(str(frames_dir / f"{t:07d}.png"), np.full((32, 32, 3), 100 + t, np.uint8))
    vclips = discover(vp)
    assert [(c.video_id, c.split, c.is_frame_folder) for c in vclips] == [
        ("alice/yt1#000010#000050", "test", False),
        ("bob/yt2#0#20", "train", True),
    ]
    assert discover(frames_dir, "images")[0].images[0].name == "0000000.png"
    assert discover(one)[0].person_id == "00001"


def test_not_a_voxceleb_layout_is_refused_clearly(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("hello")
    with pytest.raises(LayoutError, match="not a VoxCeleb layout"):
        discover(tmp_path)
    with pytest.raises(FileNotFoundError):
        discover(tmp_path / "missing")


def test_read_video_samples_evenly(synthetic_vox):
    src, _ = synthetic_vox
    frames, idx, fps, asked = read_video(next(src.rglob("*.mp4")), 5)
    assert frames.shape == (5, 128, 128, 3) and frames.dtype == np.uint8
    assert idx.tolist() == even_indices(16, 5).tolist() == [0, 4, 8, 11, 15]
    assert fps == pytest.approx(10.0) and asked == 5


# ------------------------------------------------------------------------------------------ face + crop
def test_shards_hold_the_crop_of_the_face_track_and_its_landmarks(synthetic_vox, synthetic_shards):
    """Each stored frame equals the crop of the rendered frame; landmarks are the true ones in crop pixels."""
    out, report = synthetic_shards
    assert report.complete and report.kept == 8 and not report.skipped and report.frames_written == 8 * 12
    m = load_manifest(out)
    assert m.num_videos == 8 and m.persons == [f"id{i:05d}" for i in range(1, 5)]
    assert [v.index for v in m.videos] == list(range(8)) and m.image_size == 64
    heads = synthetic_heads(4, 2)
    sample = ShardReader(m).read("id00003/v1/00001")
    box = np.array(sample.meta["crop_box"])
    assert sample.meta["frame_indices"] == even_indices(16, 12).tolist()
    for pos in (0, 7):
        t = sample.meta["frame_indices"][pos]
        img, pts = heads.render(2, 1, float(t), 128)
        np.testing.assert_allclose(sample.landmarks[pos], landmarks_to_crop(pts, box, 64), atol=1e-4)
        expected = crop_frame(np.ascontiguousarray(img), box, 64).astype(np.float32)
        assert np.abs(sample.frame(pos).astype(np.float32) - expected).mean() < 6.0  # video + JPEG coding
        assert (sample.landmarks[pos] > 0).all() and (sample.landmarks[pos] < 64).all()


# -------------------------------------------------------------------------------------------- bad input
def _bad_tree(root: Path) -> OracleDetector:
    oracle = make_synthetic_vox(root, identities=2, videos=1, frames=12)
    data = (root / "id00001" / "v0" / "00001.mp4").read_bytes()
    (root / "id00050" / "cut").mkdir(parents=True)
    (root / "id00050" / "cut" / "00001.mp4").write_bytes(data[: len(data) // 2])  # truncated
    (root / "id00051" / "junk").mkdir(parents=True)
    (root / "id00051" / "junk" / "00001.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    noise = np.random.default_rng(1).integers(0, 6, (12, 128, 128, 3), dtype=np.uint8)
    write_mp4(root / "id00052" / "wall" / "00001.mp4", np.full((12, 128, 128, 3), 128, np.uint8) + noise)
    heads = synthetic_heads(2, 1)
    imgs, pts = zip(*(heads.render(1, 0, float(t), 128) for t in range(12)))
    far = np.zeros((12, 256, 256, 3), np.uint8)
    for k, img in enumerate(imgs):
        far[k, 100:132, 100:132] = cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA)
    write_mp4(root / "id00053" / "far" / "00001.mp4", far)
    oracle.add(far, np.stack(pts) * 0.25 + 100)
    return oracle


def test_bad_videos_are_skipped_with_a_reason_each(tmp_path):
    src = tmp_path / "src"
    oracle = _bad_tree(src)
    report = preprocess(src, tmp_path / "out", CFG, detector=oracle, progress=False)
    reasons = {s["video_id"]: s["reason"] for s in report.skipped}
    assert report.kept == 2 and report.complete, report.summary()
    assert set(reasons) == {
        "id00050/cut/00001", "id00051/junk/00001", "id00052/wall/00001", "id00053/far/00001"}
    assert reasons["id00050/cut/00001"].startswith(("truncated video", "corrupt video"))
    assert reasons["id00051/junk/00001"].startswith("corrupt video")
    assert reasons["id00052/wall/00001"] == "no face found in any of 12 sampled frames"
    assert reasons["id00053/far/00001"].startswith("face too small (")
    assert reasons["id00053/far/00001"].endswith("< 20 px)")
    summary = report.summary()
    assert "skipped id00051/junk/00001: corrupt video" in summary and "frames written: 24" in summary
    m = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert m["num_videos"] == 2 and len(m["skipped"]) == 4 and m["complete"]


def test_blank_wall_has_no_face_for_dlib(tmp_path):
    write_mp4(tmp_path / "src" / "id00001" / "wall" / "00001.mp4", np.full((6, 96, 96, 3), 90, np.uint8))
    cfg = PreprocessConfig(size=64, frames_per_video=3)
    report = preprocess(tmp_path / "src", tmp_path / "out", cfg, backend="dlib", progress=False)
    assert report.kept == 0 and report.skipped[0]["reason"] == "no face found in any of 3 sampled frames"


# ------------------------------------------------------------------------------------ kill, resume, disk
def _files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*.tar"))}


def test_killed_run_resumes_to_the_same_shards(tmp_path, synthetic_vox, synthetic_shards, monkeypatch):
    src, oracle = synthetic_vox
    ref_out, _ = synthetic_shards
    out = tmp_path / "out"
    real = pp.process_clip
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt  # Ctrl-C / kill in the middle of group 3
        return real(*a, **k)

    monkeypatch.setattr(pp, "process_clip", dying)
    with pytest.raises(KeyboardInterrupt):
        preprocess(src, out, CFG, detector=oracle, progress=False)
    assert sorted(_files(out)) == ["shard-000000.tar", "shard-000001.tar"]
    # a kill during a later write leaves a temporary file and a torn ledger line: both must be ignored
    (out / "shard-000002.tar.tmp").write_bytes(b"half a tar")
    with open(out / "ledger.jsonl", "a") as fh:
        fh.write('{"group": 2, "shard": "shard-0000')
    monkeypatch.setattr(pp, "process_clip", real)
    report = preprocess(src, out, CFG, detector=oracle, progress=False)
    assert report.videos_resumed == 4 and report.videos_read == 4 and report.complete
    assert not list(out.glob("*.tmp"))
    assert _files(out) == _files(ref_out)  # byte-identical to one uninterrupted run
    assert json.loads((out / MANIFEST).read_text()) == json.loads((ref_out / MANIFEST).read_text())


def test_full_disk_stops_cleanly_and_keeps_earlier_shards(
        tmp_path, synthetic_vox, synthetic_shards, monkeypatch):
    src, oracle = synthetic_vox
    ref_out, _ = synthetic_shards
    out = tmp_path / "out"
    real = pp.write_shard

    def filling(path, samples):
        if Path(path).name == "shard-000002.tar":
            Path(str(path) + ".tmp").write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, samples)

    monkeypatch.setattr(pp, "write_shard", filling)
    report = preprocess(src, out, CFG, detector=oracle, progress=False)
    assert report.stopped and "disk is full" in report.stopped and "re-run" in report.stopped
    assert "STOPPED: output disk is full" in report.summary()
    assert not list(out.glob("*.tmp"))
    assert _files(out) == {k: v for k, v in _files(ref_out).items() if k < "shard-000002"}
    assert [len(list(iter_shard(out / n))) for n in sorted(_files(out))] == [2, 2]
    assert not load_manifest(out).complete and load_manifest(out).num_videos == 4
    monkeypatch.setattr(pp, "write_shard", real)
    report = preprocess(src, out, CFG, detector=oracle, progress=False)
    assert report.complete and _files(out) == _files(ref_out)


def test_resume_with_other_settings_is_refused(tmp_path, synthetic_vox):
    src, oracle = synthetic_vox
    out = tmp_path / "out"
    preprocess(src, out, CFG, detector=oracle, progress=False)
    other = PreprocessConfig(size=32, frames_per_video=12, min_face=20, videos_per_shard=2)
    with pytest.raises(PreprocessError, match="other settings"):
        preprocess(src, out, other, detector=oracle, progress=False)
    report = preprocess(src, out, other, detector=oracle, progress=False, overwrite=True)
    assert report.complete and load_manifest(out).image_size == 32


def test_parallel_workers_give_the_same_shards(tmp_path, synthetic_vox, synthetic_shards):
    src, oracle = synthetic_vox
    report = preprocess(src, tmp_path / "out", CFG, detector=oracle, workers=2, progress=False)
    assert report.complete and _files(tmp_path / "out") == _files(synthetic_shards[0])


# ------------------------------------------------------------------------------------------------- CLI
def _cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{REPO / 'src'}{os.pathsep}{REPO}")
    return subprocess.run(
        [sys.executable, "-m", "data_modules.preprocess", *args],
        capture_output=True, text=True, env=env, cwd=Path.cwd(), timeout=120,
    )


def test_cli_help_and_clear_errors(tmp_path):
    res = _cli("--help")
    assert res.returncode == 0
    for flag in ("--src", "--out", "--backend", "--frames-per-video", "--min-face", "--margin", "--layout",
                 "--workers", "re-run"):
        assert flag in res.stdout
    (tmp_path / "x.txt").write_text("x")
    res = _cli("--src", str(tmp_path), "--out", str(tmp_path / "o"), "--backend", "dlib")
    assert res.returncode == 2 and "not a VoxCeleb layout" in res.stderr


def test_cli_runs_end_to_end_and_reports(tmp_path):
    write_mp4(tmp_path / "src" / "id00001" / "wall" / "00001.mp4", np.full((4, 64, 64, 3), 90, np.uint8))
    res = _cli("--src", str(tmp_path / "src"), "--out", str(tmp_path / "o"), "--backend", "dlib",
               "--frames-per-video", "2", "--workers", "1")
    assert res.returncode == 0, res.stderr
    assert "videos read this run: 1" in res.stdout
    assert "skipped id00001/wall/00001: no face found" in res.stdout
    assert "preprocess" in res.stderr  # the progress bar
    assert json.loads((tmp_path / "o" / "report.json").read_text())["complete"]


# ------------------------------------------------------------------------------------- landmark backends
def test_auto_falls_back_to_dlib_when_face_alignment_weights_are_missing(tmp_path, monkeypatch, capsys):
    import torch.hub

    from talkinghead.landmarks import detectors as D

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    usable, reason = D.face_alignment_status()
    assert not usable and "not cached" in reason and str(tmp_path / "hub" / "checkpoints") in reason
    det = D.make_detector("auto")
    assert isinstance(det, D.DlibDetector)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "using dlib" in err and "not cached" in err
    with pytest.raises(ValueError, match="unknown landmark backend"):
        D.make_detector("mediapipe")


def test_auto_picks_face_alignment_when_its_weights_are_cached(tmp_path, monkeypatch):
    import face_alignment
    import torch.hub

    from talkinghead.landmarks import detectors as D

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    for p in D.face_alignment_weight_files():
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"weights")
    built = {}

    class FakeFA:
        def __init__(self, landmarks_type, device, **kw):
            built.update(device=device, **kw)

    monkeypatch.setattr(face_alignment, "FaceAlignment", FakeFA)
    det = D.make_detector("auto", device="cpu")
    assert isinstance(det, D.FaceAlignmentDetector) and built["device"] == "cpu" and built["compile"] is False


def test_face_alignment_offline_error_names_dlib(tmp_path, monkeypatch):
    import urllib.error

    import face_alignment.detection.sfd.sfd_detector as sfd
    import torch.hub

    from talkinghead.landmarks import detectors as D

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*a, **k):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(sfd, "load_state_dict_from_url", offline)
    with pytest.raises(D.DetectorUnavailableError, match="--backend dlib, which works offline"):
        D.FaceAlignmentDetector(device="cpu")


def test_face_alignment_detector_keeps_the_largest_face():
    from talkinghead.landmarks.detectors import FaceAlignmentDetector

    small = np.random.default_rng(0).uniform(10, 20, (68, 2))
    large = np.random.default_rng(1).uniform(10, 60, (68, 2))

    class FakeFA:
        def get_landmarks_from_batch(self, batch):
            assert batch.shape == (3, 3, 64, 64)
            return [np.concatenate([small, large]), [], large]

    det = FaceAlignmentDetector(device="cpu", _model=FakeFA())
    out = det.detect(np.zeros((3, 64, 64, 3), np.uint8))
    np.testing.assert_allclose(out[0], large)
    assert out[1] is None
    np.testing.assert_allclose(out[2], large)
