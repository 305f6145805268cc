"""Landmark sets (talkinghead.landmarks.sets): ibug68 draws as before, ibug68+iris draws the irises, and the
embedded synthetic data gives the exact irises it renders."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pytest

from data_modules.procedural_heads import Expression, HeadPose, SyntheticHeads
from data_modules.synthetic import SyntheticDataModule
from talkinghead.landmarks.draw import IRIS_COLOUR, LandmarkValueError, draw_landmarks
from talkinghead.landmarks.sets import (
    IBUG68,
    IBUG68_IRIS,
    LandmarkSetError,
    iris_centres,
    iris_present,
    iris_radii,
    recorded_set,
    require_same_set,
    set_of_points,
    with_irises,
)

REPO = Path(__file__).resolve().parents[1]
BEFORE_SETS = "4382d74"  # the last commit before landmark sets: its draw.py is the paper's drawing


def _draw_before_sets():
    """``draw_landmarks`` of the code before sets (git), or None outside a git checkout holding it."""
    try:
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{BEFORE_SETS}:src/talkinghead/landmarks/draw.py"],
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("draw_before_sets", loader=None))
    exec(compile(src, "draw_before_sets.py", "exec"), module.__dict__)  # noqa: S102 - the project's own code
    return module.draw_landmarks


def _heads_points(n: int = 12, size: int = 64) -> list[np.ndarray]:
    heads = SyntheticHeads(3, 2)
    return [heads.render(i % 3, i % 2, 2.5 * i, size)[1] for i in range(n)]


def test_ibug68_draws_bit_identically_to_the_code_before_sets() -> None:
    before = _draw_before_sets()
    if before is None:
        pytest.skip(f"not a git checkout holding {BEFORE_SETS}")
    rng = np.random.default_rng(0)
    cases = [(p, 64) for p in _heads_points()] + [(p * 4, 256) for p in _heads_points(4)]
    cases += [(rng.uniform(-40, 300, (68, 2)), (96, 160))]  # points off the image, a non-square image
    for pts, size in cases:
        assert np.array_equal(draw_landmarks(pts, size), before(pts, size))
    # and the iris set's 68 lines are the same pixels wherever no iris is drawn
    pts = _heads_points(1)[0]
    closed = np.concatenate([pts, np.full((4, 2), np.nan, np.float32)])
    assert np.array_equal(draw_landmarks(closed, 64), before(pts, 64))


def _eye_face(size: int = 128) -> np.ndarray:
    heads = SyntheticHeads(1, 1)
    return heads.render_with(0, HeadPose(), Expression(), size)[1]


def test_iris_drawn_as_a_disc_of_its_radius_in_its_colour_under_the_lines() -> None:
    pts = _eye_face(256)
    centres = np.stack([pts[36:42].mean(0), pts[42:48].mean(0)])
    iris = with_irises(pts, centres, np.array([4.0, 4.0]), np.array([True, False]))
    assert iris.shape == (72, 2) and set_of_points(iris) == IBUG68_IRIS
    img = draw_landmarks(iris, 256)
    base = draw_landmarks(pts, 256)
    changed = np.any(img != base, axis=-1)
    ys, xs = np.nonzero(changed)
    # only around the right iris, within its radius (+2 px: anti-aliasing reaches the pixels the edge touches)
    assert changed.sum() > 20
    assert np.hypot(xs - centres[0, 0], ys - centres[0, 1]).max() <= 6.0
    cx, cy = np.rint(centres[0]).astype(int)
    assert tuple(img[cy, cx]) == IRIS_COLOUR
    # the absent (left) iris is not drawn: nothing changed near the left eye
    assert not changed[:, int(pts[42:48, 0].min()) - 2:].any()
    # the eye's lines stay on top of the disc
    for idx in (36, 37, 38, 39, 40, 41):
        x, y = np.rint(pts[idx]).astype(int)
        assert tuple(img[y, x]) == tuple(base[y, x])


def test_set_errors_are_one_line_and_name_both_sets() -> None:
    with pytest.raises(LandmarkSetError) as e:
        require_same_set("the shards", IBUG68, "the model", IBUG68_IRIS)
    msg = str(e.value)
    assert "\n" not in msg and IBUG68 in msg and IBUG68_IRIS in msg
    with pytest.raises(LandmarkSetError, match="unknown landmark set 'ibug70'"):
        recorded_set({"landmarks": "ibug70"})
    assert recorded_set({}) == IBUG68 and recorded_set(None) == IBUG68
    with pytest.raises(LandmarkSetError):
        set_of_points(np.zeros((70, 2)))
    bad = np.concatenate([_eye_face(), np.full((4, 2), 10.0)])
    bad[68] = np.nan  # a centre without its rim point: not an absent iris
    with pytest.raises(LandmarkValueError, match="68"):
        draw_landmarks(bad, 128)


def test_synthetic_irises_are_where_the_pupils_are_drawn() -> None:
    """The exact irises against the rendered pixels: the dark pupil's centroid lies on the iris centre (within
    1/3 of the iris radius: the lids may hide part of the pupil), for gaze to both sides and a turned head."""
    heads = SyntheticHeads(4, 1)
    for ident in range(4):
        for gx, gy, yaw, roll in ((0.4, 0.1, 0, 0), (-0.4, -0.2, 15, 10), (0.0, 0.0, -10, -8)):
            pose, expr = HeadPose(yaw=yaw, roll=roll), Expression(gaze_x=gx, gaze_y=gy)
            img, _ = heads.render_with(ident, pose, expr, 256)
            rows = with_irises(np.zeros((68, 2)), *heads.irises_with(ident, pose, expr, 256))[68:]
            for c, rim in (rows[:2], rows[2:]):
                r = np.linalg.norm(rim - c)
                assert 3.5 < r < 6.5
                x0, y0 = np.rint(c).astype(int)
                win = img[y0 - 4:y0 + 5, x0 - 4:x0 + 5].astype(float).sum(-1) < 80
                ys, xs = np.nonzero(win)
                assert len(xs) >= 4
                off = np.hypot(xs.mean() + x0 - 4 - c[0], ys.mean() + y0 - 4 - c[1])
                assert off < 0.45 * r, (ident, gx, off, r)
    # a closed eye has no iris
    closed = with_irises(np.zeros((68, 2)), *heads.irises_with(0, HeadPose(), Expression(blink=1.0), 64))
    assert np.isnan(closed[68:]).all()


def test_synthetic_datamodule_carries_and_draws_the_irises() -> None:
    kw = dict(num_identities=4, videos_per_identity=1, test_identities=1, frames_per_video=48, heldout_frames=6,
              K=2, image_size=64)
    plain = SyntheticDataModule(**kw)
    iris = SyntheticDataModule(**kw, landmarks=IBUG68_IRIS)
    a, b = plain.frames_of("syn0001/v00", list(range(48))), iris.frames_of("syn0001/v00", list(range(48)))
    assert a["landmarks"].shape == (48, 68, 2) and b["landmarks"].shape == (48, 72, 2)
    assert np.array_equal(a["landmarks"].numpy(), b["landmarks"].numpy()[:, :68])
    assert np.array_equal(a["frames"].numpy(), b["frames"].numpy())
    present = iris_present(b["landmarks"].numpy())
    # blinks close the eye: some frames lack irises, most have them; drawn exactly where present
    assert present.all(1).sum() >= 30 and (~present).any()
    drew = ~np.isclose(a["landmark_images"].numpy(), b["landmark_images"].numpy()).all(axis=(1, 2, 3))
    assert np.array_equal(drew, present.any(1))
    # gaze moves the irises within the eye
    centres = iris_centres(b["landmarks"].numpy())[:, 0]
    rel = centres - b["landmarks"].numpy()[:, 36:42].mean(1)
    assert np.nanstd(rel[:, 0]) > 0.2
    assert np.nanmin(iris_radii(b["landmarks"].numpy())) > 0.5
    item = iris.train_set[0]
    assert item["landmarks"].shape == (3, 72, 2)
    with pytest.raises(LandmarkSetError):
        SyntheticDataModule(**kw, landmarks="ibug70")
