"""Reenactment across people (talkinghead.crossid): landmark scores on synthetic persons with exact landmarks, and
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
from talkinghead.crossid import expression_error, landmark_jitter, pose_error, score_clip
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


# ------------------------------------------------------------------------------------------------ in make evaluate
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("meta") / "run")


def magenta_only() -> OracleDetector:
    oracle = OracleDetector()
    oracle.add(np.full((1, 32, 32, 3), (255, 0, 255), np.uint8), np.zeros((1, 68, 2), np.float32))
    return oracle


def test_evaluate_runs_the_cross_identity_protocol_with_adaptation_on_and_off(ckpt, tmp_path, capsys) -> None:
    from talkinghead.evaluate import evaluate_main

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
    assert "| on | 2 | 2 | 6 |" in md and "no face on 12 of 12 outputs" in md
    assert "Cross-identity reenactment" in capsys.readouterr().out


def test_bad_cross_settings_are_one_line_errors(ckpt, tmp_path) -> None:
    from talkinghead.evaluate import evaluate_main

    with pytest.raises(ConfigError, match="protocols must be"):
        evaluate_main([f"ckpt={ckpt}", "protocols=[table2]", f"out_dir={tmp_path}", "~logger"])
    with pytest.raises(ConfigError, match="cross.adapt"):
        evaluate_main([f"ckpt={ckpt}", "protocols=[cross]", "cross.adapt=[maybe]", f"out_dir={tmp_path}", "~logger"])
    assert not any(tmp_path.iterdir()), "nothing written before the settings are checked"
