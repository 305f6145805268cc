"""Reenactment across people (talkinghead.evaluation.crossid): landmark scores on synthetic persons with exact landmarks, and
the protocol inside ``make evaluate`` (protocols=[cross])."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest

from conftest import OracleDetector
from data_modules.procedural_heads import SyntheticHeads
from finetune_helpers import tiny_checkpoint
from talkinghead.evaluation.crossid import (
    EyeTally, expression_error, eye_reference, find_landmarks, landmark_jitter, pose_error, score_clip,
)
from talkinghead.errors import ConfigError

SIZE = 64


@pytest.fixture(scope="module")
def clips():
    """Avatar person 0 rendered with person 1's motion (video 0, t = 0..7) -- the correct render of those driving
    landmarks -- and with other motions; an oracle detector that knows every frame."""
    heads = SyntheticHeads(3, 2, seed=3)
    oracle = OracleDetector(threshold=30.0)
    out = {}
    motions = {
        "correct": [heads.motion(1, 0, float(t)) for t in range(8)],
        "wrong": [heads.motion(2, 1, float(t) + 20) for t in range(8)],  # another person's motion, other times
    }
    # the driving pose with other expressions: a wrong expression, a right pose
    motions["wrong expression"] = [
        (pose, dataclasses.replace(expr, mouth_open=1.0 - expr.mouth_open, smile=0.8 - expr.smile, blink=0.9))
        for pose, expr in motions["correct"]
    ]
    for name, seq in motions.items():
        imgs, pts = zip(*(heads.render_with(0, pose, expr, SIZE) for pose, expr in seq))
        out[name] = (np.stack(imgs), np.stack(pts))
        oracle.add(out[name][0], out[name][1])
    return out, oracle


def test_the_pose_error_of_a_correct_render_is_below_that_of_a_render_from_wrong_landmarks(clips) -> None:
    data, oracle = clips
    driving = data["correct"][1]
    correct = score_clip(data["correct"][0], driving, oracle)
    wrong = score_clip(data["wrong"][0], driving, oracle)
    assert correct.found == wrong.found == 8
    assert correct.pose.mean() < 0.02 and correct.expression.mean() < 0.02
    assert wrong.pose.mean() > 0.05 and wrong.pose.mean() > 5 * correct.pose.mean()
    assert wrong.expression.mean() > correct.expression.mean()


def test_expression_error_sees_a_wrong_expression_that_the_pose_error_does_not(clips) -> None:
    data, oracle = clips
    driving = data["correct"][1]
    expr = score_clip(data["wrong expression"][0], driving, oracle)
    wrong = score_clip(data["wrong"][0], driving, oracle)
    correct = score_clip(data["correct"][0], driving, oracle)
    assert expr.expression.mean() > 0.01 and expr.expression.mean() > 20 * correct.expression.mean(), \
        "mouth and eyes moved"
    assert expr.pose.mean() < 0.5 * wrong.pose.mean(), "the head pose is the driving one"


def test_errors_are_in_inter_ocular_units_and_ignore_what_they_should() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(10, 50, (1, 68, 2))
    base[0, 36], base[0, 45] = (10.0, 20.0), (30.0, 20.0)  # inter-ocular distance 20
    shifted = base + np.array([2.0, 0.0])
    assert pose_error(shifted, base)[0] == pytest.approx(0.1)
    assert expression_error(shifted, base)[0] == pytest.approx(0.0, abs=1e-9), "a head move is pose, not expression"
    assert pose_error(base * 3, base * 3)[0] == 0.0
    # jitter: none on a still face, the same at any image scale, runs split where no face was found
    still = np.repeat(base, 6, axis=0)
    assert landmark_jitter(still) == pytest.approx(0.0, abs=1e-9)
    noisy = still + rng.normal(0, 0.5, still.shape)
    assert landmark_jitter(noisy) > 0.005
    assert landmark_jitter(noisy * 4) == pytest.approx(landmark_jitter(noisy))
    found = np.array([True, False, True, False, True, False])
    assert landmark_jitter(noisy, found) is None, "no two consecutive frames with a face"


# ------------------------------------------------------------------------------------------------ real detector
class Blind:
    """dlib whose detector never fires (as on small blurry outputs): only its shape predictor, in a given box."""

    name = "blind dlib"

    def __init__(self) -> None:
        from talkinghead.landmarks.detectors import DlibDetector

        self.dlib = DlibDetector()

    def faces(self, frames):
        return [[] for _ in frames]

    def fit(self, frame, box):
        return self.dlib.fit(frame, box)


def render_clips(size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Identity 0 with identity 1's motion (16 frames, which blink), rendered right and wrong, and with another
    person's motion: ``{name: (uint8 (16, size, size, 3), exact (16, 72, 2) points)}``."""
    from talkinghead.landmarks.sets import with_irises

    heads = SyntheticHeads(3, 2, seed=5)
    changes = {
        "correct": lambda e: e,
        "turned the other way": lambda e: dataclasses.replace(e, gaze_x=-e.gaze_x or 0.8, gaze_y=-e.gaze_y),
        "held shut": lambda e: dataclasses.replace(e, blink=1.0),
    }
    out = {}
    for name, (who, video, dt, change) in {**{k: (1, 0, 0.0, c) for k, c in changes.items()},
                                           "other motion": (2, 1, 20.0, lambda e: e)}.items():
        imgs, pts = [], []
        for t in range(0, 48, 3):
            pose, expr = heads.motion(who, video, float(t) + dt)
            img, lm = heads.render_with(0, pose, change(expr), size)
            imgs.append(img)
            pts.append(with_irises(lm, *heads.irises_with(0, pose, change(expr), size)))
        out[name] = (np.stack(imgs), np.stack(pts))
    return out


@pytest.fixture(scope="module")
def heads_clips():
    return render_clips(SIZE)


def test_a_shape_predictor_fitted_in_the_driving_box_reads_pose_and_expression_from_the_pixels(heads_clips) -> None:
    """On the procedural heads' exact landmarks, where no face is detected: the box fit scores a correct render
    near the detector's accuracy and a render of other landmarks far worse, so pose and expression are measurable
    on the embedded default."""
    imgs, exact = heads_clips["correct"]
    found = find_landmarks(imgs, exact, Blind())
    assert found.fitted.all() and not found.detected.any()
    assert np.median(pose_error(found.points, exact)) < 0.15 and np.median(expression_error(found.points, exact)) < 0.12
    other = heads_clips["other motion"][1]  # a render of other landmarks, scored against these
    right = score_clip(imgs, exact, Blind())
    assert right.found == right.fitted == len(imgs)
    assert score_clip(heads_clips["other motion"][0], exact, Blind()).pose.mean() > 2 * right.pose.mean()
    assert score_clip(imgs, other, Blind()).pose.mean() > 2 * right.pose.mean()
    assert find_landmarks(imgs, exact, Blind(), fit=False).ok.sum() == 0, "fit=False leaves them unscored"


def test_eye_scores_of_rendered_clips_see_a_wrong_gaze_and_shut_eyes() -> None:
    """Through score_clip on rendered 128-pixel frames (the locator's floor at 64 pixels is too close to a wrong
    gaze to test: docs/landmarks.md): located irises, exact 68 points (an oracle detector)."""
    heads_clips = render_clips(128)
    imgs, exact = heads_clips["correct"]
    reference = eye_reference(imgs, exact)
    assert np.isfinite(reference[:, 68:]).any(), "the locator finds the driver's irises"
    scores = {}
    for name, (frames, pts) in heads_clips.items():
        if name == "other motion":
            continue
        oracle = OracleDetector(threshold=30.0)
        oracle.add(frames, pts[:, :68])
        scores[name] = score_clip(frames, exact, oracle, reference)
    right, turned, shut = scores["correct"], scores["turned the other way"], scores["held shut"]
    assert right.gaze.size and right.gaze.mean() < 0.05 and right.iris_missing == 0
    assert turned.gaze.mean() > 3 * right.gaze.mean() + 0.05
    assert right.blink_r > 0.8 and right.blinks >= 1 and right.blinks_missed == 0
    assert shut.iris_missing > 0.5 * shut.iris_present and shut.blinks_missed == shut.blinks >= 1
    tally = EyeTally()
    for s in (right, turned):
        tally.add(s)
    assert right.gaze.mean() < tally.values()["gaze_error"] < turned.gaze.mean()


# ------------------------------------------------------------------------------------------------ in make evaluate
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("meta") / "run")


def magenta_only() -> OracleDetector:
    oracle = OracleDetector()
    oracle.add(np.full((1, 32, 32, 3), (255, 0, 255), np.uint8), np.zeros((1, 68, 2), np.float32))
    return oracle


def test_evaluate_runs_the_cross_identity_protocol_with_adaptation_on_and_off(ckpt, tmp_path, capsys) -> None:
    from talkinghead.evaluation.evaluate import evaluate_main

    out = evaluate_main(
        [f"ckpt={ckpt}", "protocols=[cross]", "cross.persons=2", "cross.T=1", "cross.method=FF", "cross.num_frames=3",
         "synthetic_video_length=8", f"out_dir={tmp_path}", "~logger", "progress=false"],
        detector=magenta_only(),  # it knows no output frame: the tiny model's outputs get no landmarks
    )
    assert out.name == "cross.csv" and not (out.parent / "table.csv").exists(), "table1 was not asked for"
    rows = list(csv.DictReader(out.open()))
    assert [r["adapt"] for r in rows] == ["on", "off"]
    for r in rows:
        assert r["avatars"] == "2" and r["pairs"] == "2" and r["frames"] == "6"
        assert -1.0 <= float(r["CSIM"]) <= 1.0
        assert r["pose_NME"] == "" and r["faces_found"] == "0", "no landmark found: unavailable, never made up"
    md = (out.parent / "cross.md").read_text()
    assert "| on | 2 | 2 | 6 |" in md and "no landmarks on 12 of 12 outputs" in md
    assert "Cross-identity reenactment" in capsys.readouterr().out


def test_bad_cross_settings_are_one_line_errors(ckpt, tmp_path) -> None:
    from talkinghead.evaluation.evaluate import evaluate_main

    with pytest.raises(ConfigError, match="protocols must be"):
        evaluate_main([f"ckpt={ckpt}", "protocols=[table2]", f"out_dir={tmp_path}", "~logger"])
    with pytest.raises(ConfigError, match="cross.adapt"):
        evaluate_main([f"ckpt={ckpt}", "protocols=[cross]", "cross.adapt=[maybe]", f"out_dir={tmp_path}", "~logger"])
    assert not any(tmp_path.iterdir()), "nothing written before the settings are checked"
