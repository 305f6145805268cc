"""Quality guard for ``--landmarks track`` on real faces: voxmini tracked (the shared ``voxmini_shards`` fixture,
track is the default) against voxmini detected on every sampled frame (``--landmarks detect``).

Bound: the median distance between tracked and detected points is at most 1.5 px on the 256² crops, and the same
clips are kept and skipped with the same reasons.
"""

from __future__ import annotations

import numpy as np
import pytest

from data_modules.preprocess import PreprocessConfig, preprocess
from data_modules.shards import iter_shard, load_manifest

pytestmark = [pytest.mark.voxmini, pytest.mark.slow]


def _samples(out):
    m = load_manifest(out)
    return {s.meta["video_id"]: s for shard in m.shards for s in iter_shard(out / shard)}


def _to_frame(points: np.ndarray, box, size: int) -> np.ndarray:
    x0, y0, side = (int(round(v)) for v in box)  # the inverse of preprocess.landmarks_to_crop
    return points * (side / size) + np.array([x0, y0], dtype=np.float32)


def test_tracked_landmarks_agree_with_per_frame_detection(voxmini_dir, voxmini_shards, tmp_path):
    tracked_out, tracked = voxmini_shards
    cfg = PreprocessConfig(size=256, frames_per_video=16, videos_per_shard=8)  # as the fixture
    detected = preprocess(voxmini_dir, tmp_path, cfg, backend="dlib", workers=2, progress=False, landmarks="detect")
    assert tracked.skipped == detected.skipped and tracked.kept == detected.kept, (tracked.summary(),
                                                                                 detected.summary())
    a, b = _samples(tracked_out), _samples(tmp_path)
    assert sorted(a) == sorted(b)
    errors = []
    for vid, s in a.items():
        d = b[vid]
        assert s.meta["detector"] == "dlib+track" and d.meta["detector"] == "dlib"
        common = sorted(set(s.meta["frame_indices"]) & set(d.meta["frame_indices"]))
        assert len(common) >= 0.9 * len(d.meta["frame_indices"]), vid  # the same frames are kept
        for f in common:
            pt = _to_frame(s.landmarks[s.meta["frame_indices"].index(f)], s.meta["crop_box"], 256)
            pd = d.landmarks[d.meta["frame_indices"].index(f)]
            x0, y0, side = (int(round(v)) for v in d.meta["crop_box"])
            pt = (pt - np.array([x0, y0], dtype=np.float32)) * (256 / side)  # into the detected run's crop
            errors.append(np.linalg.norm(pt - pd, axis=1))
    errors = np.concatenate(errors)
    median = float(np.median(errors))
    print(f"tracked vs detected on voxmini: median {median:.2f} px, 90th percentile "
          f"{np.percentile(errors, 90):.2f} px on 256² crops ({len(errors) // 68} frames)")
    assert median <= 1.5


def test_dlib_fit_on_the_face_region_gives_the_full_frame_points(voxmini_dir):
    """The tracker's dlib fit hands the predictor the region around the box: the points must not change."""
    from data_modules.sources import read_video
    from talkinghead.landmarks.detectors import DlibDetector

    det = DlibDetector()
    videos = sorted(voxmini_dir.glob("*/mp4/*/*/*.mp4"))[:6]
    compared = 0
    for video in videos:
        frames, *_ = read_video(video, 6)
        for frame in frames:
            for box, _ in det.faces(frame[None])[0]:
                for shift in (0.0, 40.0):  # the box as detected, and moved so that its region leaves the frame
                    b = box - shift
                    rect = det._dlib.rectangle(*(int(round(v)) for v in b))
                    full = det._predictor(np.ascontiguousarray(frame), rect)
                    want = np.array([[p.x, p.y] for p in full.parts()], dtype=np.float32)
                    got, _ = det.fit(frame, b)
                    np.testing.assert_array_equal(got, want)
                    compared += 1
    assert compared >= 40
