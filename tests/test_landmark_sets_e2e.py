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
from talkinghead.inference.avatar import AvatarMismatchError, load_avatar
from talkinghead.inference.export import landmark_drawing
from talkinghead.inference.fewshot import FineTuneSettings, fit_avatar
from talkinghead.landmarks.eyes import gaze
from talkinghead.landmarks.sets import IBUG68, IBUG68_IRIS, LandmarkSetError, iris_present
from talkinghead.inference.reenact import Driver, driver_points, load_driver


@pytest.fixture(scope="module")
def iris_ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("meta") / "iris", extra=[f"model.landmarks={IBUG68_IRIS}"])


def test_the_eye_figure_puts_both_models_beside_the_driver(iris_ckpt, tmp_path, capsys) -> None:
    from PIL import Image

    from talkinghead.tools.eyes_figure import STATES, main

    plain = tiny_checkpoint(tmp_path / "plain", extra=[f"model.landmarks={IBUG68}"])
    out = tmp_path / "eyes.png"
    main(["--ckpt68", str(plain), "--ckpt-iris", str(iris_ckpt), "--out", str(out), "--steps", "1"])
    w, h = Image.open(out).size
    assert (w, h) == (len(STATES) * (3 * 32 + 2) + 2, 4 * (3 * 32 + 2) + 2), "4 rows x 4 eye states, 3x enlarged"
    printed = capsys.readouterr().out
    assert "ibug68+iris " in printed and printed.count("gaze x") == 2 * len(STATES)
    with pytest.raises(SystemExit, match="need ibug68 and ibug68\\+iris"):
        main(["--ckpt68", str(iris_ckpt), "--ckpt-iris", str(plain), "--out", str(tmp_path / "x.png"), "--steps", "1"])


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
    plain = api.load_model(tiny_checkpoint(tmp_path / "plain", extra=[f"model.landmarks={IBUG68}"]))
    assert plain.config.model.landmarks == IBUG68
    with pytest.raises(AvatarMismatchError) as e:
        av.check_model(plain)
    _one_line(e, f"landmarks={IBUG68_IRIS}", f"landmarks={IBUG68}")


# ------------------------------------------------------------------ real video: the tracker locates the irises
#: (identity, video) of the person a video avatar is made of and of the driver; 256² frames (eyes ~25 px wide)
REAL = {"person": (2, 0), "driver": (3, 1)}


@pytest.fixture(scope="module")
def iris_videos(tmp_path_factory) -> tuple[dict[str, Path], dict[str, np.ndarray], object]:
    """Two mp4 files of synthetic heads, their exact irises (frame pixels: centres (N, 2, 2), drawn (N, 2)) and an
    oracle detector that gives their exact 68 points (dlib does not fire on cartoon heads)."""
    from conftest import OracleDetector, synthetic_heads, write_mp4

    heads = synthetic_heads(4, 2, seed=1)
    oracle = OracleDetector()
    root = tmp_path_factory.mktemp("iris_videos")
    paths, truth = {}, {}
    for kind, (ident, vid) in REAL.items():
        imgs, pts = zip(*(heads.render(ident, vid, float(t), 256) for t in range(8)))
        paths[kind] = root / f"{kind}.mp4"
        write_mp4(paths[kind], np.stack(imgs))
        oracle.add(np.stack(imgs), np.stack(pts))
        exact = [heads.irises(ident, vid, float(t), 256) for t in range(8)]
        truth[kind] = (np.stack([c for c, _, _ in exact]), np.stack([d for _, _, d in exact]))
    return paths, truth, oracle


def test_a_real_video_gets_located_irises_for_fine_tuning_and_driving(iris_ckpt, iris_videos, tmp_path) -> None:
    from talkinghead.crop import landmarks_to_crop
    from talkinghead.inference.live import LiveSession
    from talkinghead.inference.shots import read_user_frames, track_faces

    paths, truth, oracle = iris_videos
    meta = api.load_model(iris_ckpt)
    made = api.make_avatar(str(paths["person"]), T=4, mode="FT", meta=meta, detector=oracle,
                           settings=FineTuneSettings.from_recipe(steps=2, batch_size=2, epochs=None), out_dir=tmp_path,
                           preview_frames=4)
    av = load_avatar(made.path)
    assert av.landmark_set == IBUG68_IRIS and tuple(av.reference_landmarks.shape) == (72, 2)
    clip = api.drive(made.path, str(paths["driver"]), tmp_path / "o.mp4", meta=meta, detector=oracle)
    assert clip.path.is_file() and clip.frames == 8 and not any("iris absent" in n for n in clip.notes), clip.notes
    full = api.drive(made.path, str(paths["driver"]), tmp_path / "full.mp4", meta=meta, detector=oracle, full=True)
    assert full.path.is_file() and full.frames == 8
    # live driving (the page's Live tab, make live): the camera frames get their irises too
    live = LiveSession.from_file(made.path, meta, oracle)
    frames, _ = read_user_frames(paths["driver"])
    for f in frames:
        live.process(f)
    assert live.stats.rendered == 8 and live.stats.iris_absent == 0, live.stats
    assert "iris absent in 0/8" in live.stats.markdown()
    # the tracked driver's irises: present where drawn, within a few pixels of the exact ones (frame pixels)
    track = track_faces(frames, oracle, 256, landmark_set=IBUG68_IRIS)  # a 256² crop: crop pixels ~ frame pixels
    centres, drawn = truth["driver"]
    assert drawn.all()  # open eyes throughout: every iris must be found
    found = iris_present(track.landmarks)
    assert found.all(), found
    exact = np.stack([landmarks_to_crop(c, track.box, 256) for c in centres])
    err = np.linalg.norm(track.landmarks[:, [68, 70]] - exact, axis=-1) * float(track.box[2]) / 256  # frame px
    print(f"tracked driver irises: error median {np.median(err):.2f} px, max {err.max():.2f} px (256² frames)")
    assert np.median(err) < 1.5 and err.max() < 3.0, err
    drv = load_driver(str(paths["driver"]), av.data_config, av.image_size, detector=oracle)
    assert drv.landmarks.shape == (8, 72, 2) and iris_present(drv.landmarks).all()
