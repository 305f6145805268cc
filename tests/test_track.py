"""Face tracking (``talkinghead.landmarks.track``): cuts, two faces, faces that leave, and ``--landmarks detect``.

The real-face tests run dlib on frames of voxmini clips (skipped where voxmini is absent); each is a few seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from talkinghead.landmarks.track import FaceTracker, iou, landmark_box, make_landmarker

REPO = Path(__file__).resolve().parents[1]
#: the commit before tracking existed: its preprocessing is "today's behaviour" that ``--landmarks detect`` keeps
BEFORE_TRACKING = "ea23ac690e72fcb0e76aeaf1a3ac0b0ac3220cd3"


@pytest.fixture(scope="module")
def dlib_detector():
    from talkinghead.landmarks.detectors import DlibDetector

    return DlibDetector()


def _clip(voxmini_dir: Path, rel: str, count: int) -> np.ndarray:
    from data_modules.sources import read_video

    return read_video(voxmini_dir / "dev" / "mp4" / rel, count)[0]


def _resize(frames: np.ndarray, h: int, w: int) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])


def _mean_err(a: np.ndarray | None, b: np.ndarray | None) -> float:
    return float(np.linalg.norm(a - b, axis=1).mean())


# ------------------------------------------------------------------------------------------------ unit level
def test_untrackable_detectors_are_left_as_they_are():
    class Fake:
        name = "fake"

        def detect(self, frames):
            return [None] * len(frames)

    fake = Fake()
    assert make_landmarker(fake, "track") is fake
    with pytest.raises(ValueError, match="track, detect"):
        make_landmarker(fake, "sometimes")


def test_tracked_frames_are_fitted_not_detected(voxmini_dir, dlib_detector):
    frames = _clip(voxmini_dir, "id90002/d3/00001.mp4", 20)
    tracker = FaceTracker(dlib_detector, key_interval=8)
    tracked = tracker.detect(frames)
    detected = dlib_detector.detect(frames)
    assert tracker.stats.key == [0, 8, 16]  # a steady face: only the scheduled key frames are detected
    assert tracker.stats.tracked == 17
    errs = [_mean_err(t, d) for t, d in zip(tracked, detected)]
    assert max(errs) < 4.0, errs  # pixels of the 512² frame


# ------------------------------------------------------------------------------------------------ bad input
def test_a_cut_makes_the_tracker_redetect_and_drop_the_old_face(voxmini_dir, dlib_detector):
    a = _clip(voxmini_dir, "id90002/d3/00001.mp4", 10)  # face right of centre
    b = _clip(voxmini_dir, "id90005/d10/00001.mp4", 10)
    frames = np.concatenate([a, _resize(b, *a.shape[1:3])])
    tracker = FaceTracker(dlib_detector, key_interval=100)  # no scheduled re-detection: only the cut can cause it
    tracked = tracker.detect(frames)
    detected = dlib_detector.detect(frames)
    assert 10 in tracker.stats.key, tracker.stats
    assert tracker.stats.reasons.get("cut", 0) + tracker.stats.reasons.get("appearance", 0) >= 1
    for i in range(10, 20):  # after the splice: the new face, as detection finds it
        assert _mean_err(tracked[i], detected[i]) < 10.0, i  # some drift: no key frame for 10 frames
        assert _mean_err(tracked[i], tracked[9]) > 30.0, i  # not the old face carried over


def test_two_faces_keep_the_largest_and_do_not_jump(voxmini_dir, dlib_detector):
    """Left: face A, shrinking a little; right: face B, growing a little; B becomes the larger half way through."""
    a = _clip(voxmini_dir, "id90005/d10/00001.mp4", 16)
    b = _clip(voxmini_dir, "id90009/d14/00001.mp4", 16)
    frames = []
    for t in range(16):
        sa, sb = 320 - 3 * t, 290 + 3 * t  # sides of the two halves' content
        canvas = np.zeros((360, 720, 3), np.uint8)
        canvas[:sa, :sa] = _resize(a[t : t + 1], sa, sa)[0]
        canvas[:sb, 360 : 360 + sb] = _resize(b[t : t + 1], sb, sb)[0]
        frames.append(canvas)
    frames = np.stack(frames)
    detected = dlib_detector.detect(frames)
    assert detected[0][:, 0].mean() < 360 and detected[-1][:, 0].mean() > 360  # detection jumps from A to B
    tracked = FaceTracker(dlib_detector, key_interval=4).detect(frames)
    assert all(p is not None and p[:, 0].max() < 360 for p in tracked)  # the tracker stays on A


def test_a_face_that_leaves_and_returns_is_none_while_away(voxmini_dir, dlib_detector):
    frames = _clip(voxmini_dir, "id90004/d9/00001.mp4", 24).copy()
    frames[8:14] = 90  # the face is gone (an empty grey frame)
    tracker = FaceTracker(dlib_detector, key_interval=100)
    tracked = tracker.detect(frames)
    detected = dlib_detector.detect(frames)
    assert all(tracked[i] is None for i in range(8, 14))
    assert 14 in tracker.stats.key  # found again by detection when it comes back
    for i in (*range(8), *range(14, 24)):
        assert tracked[i] is not None and _mean_err(tracked[i], detected[i]) < 4.0, i


def test_no_face_after_the_first_second_is_skipped_with_todays_reason(voxmini_dir, tmp_path):
    """The same clip and reason are reported with tracking as with per-frame detection; nothing else is lost."""
    from tests.conftest import write_mp4
    from data_modules.preprocess import PreprocessConfig, preprocess

    src = tmp_path / "src"
    frames = _clip(voxmini_dir, "id90009/d14/00002.mp4", 50)
    frames = frames.copy()
    frames[10:] = 40  # 10 fps: nothing after the first second
    write_mp4(src / "id00001" / "v0" / "00001.mp4", frames)
    write_mp4(src / "id00002" / "v0" / "00001.mp4", _clip(voxmini_dir, "id90002/d3/00001.mp4", 20))
    cfg = PreprocessConfig(size=128, frames_per_video=16, videos_per_shard=4)
    reports = {
        mode: preprocess(src, tmp_path / mode, cfg, backend="dlib", workers=0, progress=False, landmarks=mode)
        for mode in ("detect", "track")
    }
    assert reports["track"].skipped == reports["detect"].skipped
    assert [s["video_id"] for s in reports["track"].skipped] == ["id00001/v0/00001"]
    assert "face found in only" in reports["track"].skipped[0]["reason"]
    assert reports["track"].kept == reports["detect"].kept == 1


# ------------------------------------------------------------------------------------------------ detect
def _git_has(commit: str) -> bool:
    try:
        return subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{commit}^{{commit}}"],
                              capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not _git_has(BEFORE_TRACKING), reason="not a git checkout holding the pre-tracking commit")
def test_landmarks_detect_reproduces_the_shards_of_the_code_before_tracking(voxmini_dir, tmp_path):
    """``--landmarks detect`` against the code of ``BEFORE_TRACKING`` (git archive), on 3 voxmini clips."""
    src = tmp_path / "src"
    for rel in ("id90001/d0/00001.mp4", "id90003/d6/00002.mp4", "id90010/s18/00001.mp4"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        # copies, not links: the shards record the clip's path as found under --src, which the code before
        # tracking resolved through links
        shutil.copyfile(voxmini_dir / "dev" / "mp4" / rel, src / rel)
    old = tmp_path / "old"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE_TRACKING, "src", "data_modules"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
    args = ["-m", "data_modules.preprocess", "--src", str(src), "--backend", "dlib", "--frames-per-video", "8",
            "--videos-per-shard", "2", "--workers", "0", "--no-progress"]
    for name, root, extra in (("before", old, []), ("now", REPO, ["--landmarks", "detect"])):
        env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}
        subprocess.run([sys.executable, *args, "--out", str(tmp_path / name), *extra], env=env, check=True,
                       capture_output=True, cwd=tmp_path)
    shards = sorted(p.name for p in (tmp_path / "before").glob("shard-*.tar"))
    assert shards == sorted(p.name for p in (tmp_path / "now").glob("shard-*.tar")) and len(shards) == 2
    for name in shards:
        assert (tmp_path / "now" / name).read_bytes() == (tmp_path / "before" / name).read_bytes(), name
    # the manifest gained its format's second version: each clip names its video (one W row per video) and the
    # clips are counted apart from the videos; nothing else changed
    now_m, before_m = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("now", "before"))
    assert now_m.pop("format") == "talkinghead-shards/2" and before_m.pop("format") == "talkinghead-shards/1"
    assert now_m.pop("num_clips") == len(now_m["videos"]) == 3
    assert now_m.pop("landmarks") == "ibug68"  # the landmark set (docs/landmarks.md): none recorded before = ibug68
    assert [v.pop("video") for v in now_m["videos"]] == [v["video_id"].rsplit("/", 1)[0] for v in now_m["videos"]]
    assert now_m == before_m
    # the settings record gained one key with cluster parts ("part": null for a whole run), nothing else
    now, before = (json.loads((tmp_path / d / "config.json").read_text()) for d in ("now", "before"))
    assert now.pop("part") is None and now == before


# ------------------------------------------------------------------------------------------------ face-alignment
class _FakeFaceAlignment:
    """Stands in for ``face_alignment.FaceAlignment``: S3FD finds one face at a fixed box; FAN returns points
    inside the box it is given, with a heatmap score the test chooses per frame."""

    def __init__(self, scores: dict[int, float]) -> None:
        self.batches: list[int] = []
        self.fits = 0
        self.scores = scores
        fake = self

        class Detector:
            def detect_from_batch(self, batch):
                fake.batches.append(len(batch))
                return [[np.array([100.0, 120.0, 300.0, 340.0, 0.99])] for _ in range(len(batch))]

        self.face_detector = Detector()

    def get_landmarks_from_image(self, image, detected_faces=None, return_landmark_score=False):
        pts = []
        for b in detected_faces:
            u = np.linspace(0, 1, 68)
            pts.append(np.stack([b[0] + (b[2] - b[0]) * u, b[1] + (b[3] - b[1]) * (0.5 + 0.4 * np.sin(7 * u))], 1))
        if not return_landmark_score:
            return pts
        self.fits += 1
        frame_id = int(image[0, 0, 0])
        return pts, [np.full(68, self.scores.get(frame_id, 0.9))], None


def test_face_alignment_detects_key_frames_in_one_batch_and_fits_the_rest():
    from talkinghead.landmarks.detectors import FaceAlignmentDetector

    fake = _FakeFaceAlignment(scores={7: 0.05})  # frame 7: FAN is unsure -> re-detected
    det = FaceAlignmentDetector(device="cpu", batch_size=16, _model=fake)
    texture = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    frames = np.repeat(texture[None], 12, axis=0)  # a still scene
    frames[:, 0, 0, 0] = np.arange(12)  # the frame number, for the fake's score (invisible to the cut test)
    tracker = FaceTracker(det, key_interval=5)
    out = tracker.detect(frames)
    assert fake.batches[0] == 3  # key frames 0, 5, 10 in one S3FD batch
    assert tracker.stats.reasons.get("score") == 1 and 7 in tracker.stats.key
    assert fake.batches[1:] == [1]  # the failed frame, detected on its own
    assert tracker.stats.tracked == 12 - 4 and all(p is not None and p.shape == (68, 2) for p in out)


def test_online_tracking_frame_by_frame_gives_the_clips_landmarks():
    """``OnlineTracker.step`` (live driving) follows the schedule of ``FaceTracker.track`` (a clip) frame by frame."""
    from talkinghead.landmarks.detectors import FaceAlignmentDetector

    texture = np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)
    frames = np.repeat(texture[None], 12, axis=0)
    frames[:, 0, 0, 0] = np.arange(12)
    clip = FaceTracker(FaceAlignmentDetector(device="cpu", _model=_FakeFaceAlignment(scores={7: 0.05})), key_interval=5)
    expected = clip.detect(frames)
    live = FaceTracker(FaceAlignmentDetector(device="cpu", _model=_FakeFaceAlignment(scores={7: 0.05})),
                       key_interval=5).online()
    got = [live.step(f) for f in frames]
    assert all(np.array_equal(a, b) for a, b in zip(expected, got))
    assert live.stats.key == clip.stats.key and live.stats.tracked == clip.stats.tracked == 8
