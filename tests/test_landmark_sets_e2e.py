"""ibug68+iris end to end: tiny meta-learning -> fine-tuning -> reenactment -> export metadata, the set recorded at
every step, and mixed sets refused in one line that names both."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from finetune_helpers import tiny_checkpoint

from talkinghead import api
from talkinghead.avatar import AvatarMismatchError, load_avatar
from talkinghead.export import landmark_drawing
from talkinghead.fewshot import FineTuneSettings, fit_avatar
from talkinghead.landmarks.eyes import gaze
from talkinghead.landmarks.sets import IBUG68, IBUG68_IRIS, LandmarkSetError, iris_present
from talkinghead.reenact import Driver, driver_points, load_driver


@pytest.fixture(scope="module")
def iris_ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("meta") / "iris", extra=[f"model.landmarks={IBUG68_IRIS}"])


@pytest.fixture(scope="module")
def iris_avatar(iris_ckpt, tmp_path_factory) -> Path:
    made = api.make_avatar(
        "syn0005/v01", T=4, mode="FT", ckpt=iris_ckpt, settings=FineTuneSettings.from_recipe(steps=2, batch_size=2, epochs=None),
        out_dir=tmp_path_factory.mktemp("avatars"), preview_frames=4,
    )
    return made.path


def _one_line(exc: pytest.ExceptionInfo, *words: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_the_set_is_recorded_in_checkpoint_avatar_and_export(iris_ckpt, iris_avatar) -> None:
    meta = api.load_model(iris_ckpt)
    assert meta.config.model.landmarks == IBUG68_IRIS and meta.config.data.landmarks == IBUG68_IRIS
    av = load_avatar(iris_avatar)
    assert av.landmark_set == IBUG68_IRIS and tuple(av.reference_landmarks.shape) == (72, 2)
    drawing = json.loads(json.dumps(landmark_drawing(av.image_size, av.landmark_set)))  # what file_metadata writes
    assert drawing["landmark_set"] == IBUG68_IRIS and drawing["irises"]["rows"] == {"right": [68, 69], "left": [70, 71]}


def test_reenactment_follows_the_drivers_gaze(iris_ckpt, iris_avatar, tmp_path) -> None:
    meta = api.load_model(iris_ckpt)
    clip = api.drive(iris_avatar, "syn0004/v00", tmp_path / "o.mp4", meta=meta, synthetic_frames=10, max_frames=10)
    assert clip.path.is_file() and clip.frames == 10 and clip.adapted
    av = load_avatar(iris_avatar)
    drv = load_driver("syn0004/v00", av.data_config, av.image_size, synthetic_frames=10)
    assert drv.landmarks.shape == (10, 72, 2)
    points, adapted = driver_points(drv, av)
    assert adapted and points.shape == (10, 72, 2)
    ok = iris_present(drv.landmarks)
    np.testing.assert_allclose(gaze(points)[ok], gaze(drv.landmarks)[ok], atol=1e-4)


def test_mixed_sets_are_one_line_naming_both(iris_ckpt, iris_avatar, tmp_path) -> None:
    av = load_avatar(iris_avatar)
    # a 68-point driver (a real video's tracker) for an iris avatar
    d68 = Driver(lambda: torch.zeros(0), np.zeros((3, 68, 2), np.float32), None, 10.0, 0, "clip.mp4")
    with pytest.raises(LandmarkSetError) as e:
        driver_points(d68, av)
    _one_line(e, IBUG68_IRIS, "uses landmark set ibug68 but", "clip.mp4")
    # 68-point fine-tuning frames for an iris model
    meta = api.load_model(iris_ckpt)
    shots = {"frames": torch.zeros(2, 3, 32, 32), "landmark_images": torch.zeros(2, 3, 32, 32),
             "landmarks": torch.zeros(2, 68, 2)}
    with pytest.raises(LandmarkSetError) as e:
        fit_avatar(meta, shots, mode="FF")
    _one_line(e, IBUG68_IRIS, f"uses landmark set {IBUG68} but")
    # an ibug68 checkpoint with an iris avatar (and so an ibug68 avatar with an iris checkpoint)
    plain = api.load_model(tiny_checkpoint(tmp_path / "plain"))
    assert plain.config.model.landmarks == IBUG68
    with pytest.raises(AvatarMismatchError) as e:
        av.check_model(plain)
    _one_line(e, f"landmarks={IBUG68_IRIS}", f"landmarks={IBUG68}")


def test_live_driving_refuses_an_iris_avatar_in_one_line(iris_avatar) -> None:
    from types import SimpleNamespace

    from talkinghead.live import LiveSession

    with pytest.raises(LandmarkSetError) as e:
        LiveSession(SimpleNamespace(avatar=load_avatar(iris_avatar)), detector=None)
    _one_line(e, "live driving", IBUG68_IRIS)
