"""Reenactment: playable mp4s, side-by-side layout, faceless driver frames, atomic output, landmark adaptation."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from conftest import OracleDetector, synthetic_heads, write_mp4
from finetune_helpers import tiny_checkpoint
from talkinghead.inference.avatar import AvatarMismatchError, load_meta_learned, save_avatar
from talkinghead.inference.fewshot import fit_avatar
from talkinghead.landmarks.adapt import adapt_landmarks, fit_similarity, should_adapt
from talkinghead.cli import reenact_main
from talkinghead.inference.reenact import ReenactError, load_driver
from talkinghead.video import VideoWriteError, write_video
from talkinghead.inference.shots import evenly, resolve
from talkinghead.safe_load import safe_load


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("meta") / "run")


@pytest.fixture(scope="module")
def avatar(ckpt, tmp_path_factory) -> Path:
    meta = load_meta_learned(ckpt)
    person = resolve("syn0004/v00", meta.config.data, meta.image_size, synthetic_video_length=64)
    result = fit_avatar(
        meta, person.load(evenly(32, 2)), mode="FF", person_id="syn0004", source="syn0004/v00"
    )
    return save_avatar(result.avatar, tmp_path_factory.mktemp("avatar") / "avatar.pt")


def decode(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return len(frames), frames[0].width, frames[0].height


def test_reenact_writes_a_playable_mp4_and_side_by_side_is_three_wide(avatar, tmp_path) -> None:
    out = reenact_main(avatar, "syn0005/v01", tmp_path / "plain.mp4", synthetic_frames=12, progress=False)
    assert decode(out) == (12, 32, 32)
    out3 = reenact_main(
        avatar, "syn0005/v01", tmp_path / "sbs.mp4", side_by_side=True, synthetic_frames=12, progress=False
    )
    assert decode(out3) == (12, 96, 32)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain.mp4", "sbs.mp4"], "no temporary files left"


def test_a_driver_video_with_faceless_frames_holds_the_last_landmarks(avatar, tmp_path, capsys) -> None:
    heads = synthetic_heads(8, 2, seed=5)
    imgs, pts = zip(*(heads.render(3, 1, float(t), 96) for t in range(8)))
    oracle = OracleDetector()
    oracle.add(np.stack(imgs), np.stack(pts))
    frames = np.stack(imgs).copy()
    frames[[3, 4, 6]] = 0  # no face there
    video = tmp_path / "driver.mp4"
    write_mp4(video, frames)
    drv = load_driver(str(video), {}, 32, detector=oracle)
    assert drv.missing == 3 and len(drv.landmarks) == 8
    assert np.array_equal(drv.landmarks[3], drv.landmarks[2]) and np.array_equal(
        drv.landmarks[4], drv.landmarks[2]
    )
    assert np.array_equal(drv.landmarks[6], drv.landmarks[5])
    assert not np.array_equal(drv.landmarks[5], drv.landmarks[2])
    out = reenact_main(avatar, str(video), tmp_path / "out.mp4", detector=oracle, progress=False)
    assert "no face in 3 of 8 frames: held the last good landmarks" in capsys.readouterr().err
    assert decode(out) == (8, 32, 32)


def test_a_failed_write_leaves_no_output_file(tmp_path) -> None:
    def frames():
        for i in range(5):
            if i == 3:
                raise KeyboardInterrupt
            yield np.full((32, 32, 3), 40 * i, np.uint8)

    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / "x.mp4", frames())
    assert not any(tmp_path.iterdir()), "neither the output nor its temporary file may remain"
    with pytest.raises(VideoWriteError, match="no frame"):
        write_video(tmp_path / "y.mp4", iter([]))
    assert not any(tmp_path.iterdir())


def test_avatar_of_another_model_fails_before_writing(avatar, ckpt, tmp_path) -> None:
    import torch

    data = safe_load(ckpt)
    key = next(k for k in data["state_dict"] if k.startswith("generator.") and k.endswith("original"))
    data["state_dict"][key] = -data["state_dict"][key]
    torch.save(data, tmp_path / "other.ckpt")
    with pytest.raises(AvatarMismatchError, match="avatar was made from model"):
        reenact_main(
            avatar, "syn0005/v01", tmp_path / "o.mp4", ckpt=str(tmp_path / "other.ckpt"), progress=False
        )
    assert not (tmp_path / "o.mp4").exists()
    with pytest.raises(ReenactError, match=r"\.mp4"):
        reenact_main(avatar, "syn0005/v01", tmp_path / "o.avi", progress=False)


# ------------------------------------------------------------------------------------------------ adaptation
def _ratios(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(face height / jaw width, mouth opening / inter-ocular distance) per frame of (N, 68, 2)."""
    shape = np.linalg.norm(lm[:, 8] - lm[:, 27], axis=1) / np.linalg.norm(lm[:, 16] - lm[:, 0], axis=1)
    mouth = np.linalg.norm(lm[:, 66] - lm[:, 62], axis=1) / np.linalg.norm(lm[:, 45] - lm[:, 36], axis=1)
    return shape, mouth


def test_adaptation_keeps_the_avatars_face_shape_and_follows_the_drivers_motion() -> None:
    from data_modules.procedural_heads import Expression, HeadPose

    heads = synthetic_heads(40, 3, seed=0)
    avatar_id, driver_id, size = 33, 12, 256
    motions = [heads.motion(driver_id, 0, t) for t in range(0, 40, 2)]
    driver = np.stack([heads.render_with(driver_id, p, e, size)[1] for p, e in motions])
    # ground truth: the avatar's own face making the driver's poses and expressions
    truth = np.stack([heads.render_with(avatar_id, p, e, size)[1] for p, e in motions])
    d_ref = heads.render_with(driver_id, HeadPose(), Expression(), size)[1]
    a_ref = heads.render_with(avatar_id, HeadPose(), Expression(), size)[1]
    adapted = adapt_landmarks(driver, a_ref, d_ref)

    shape_t, mouth_t = _ratios(truth)
    shape_a, mouth_a = _ratios(adapted)
    shape_d, _ = _ratios(driver)
    assert np.abs(shape_d - shape_t).mean() > 0.05, "the two faces differ in shape (else the test is empty)"
    assert np.abs(shape_a - shape_t).mean() < 0.01, "adapted landmarks keep the avatar's face shape"
    assert np.abs(mouth_a - mouth_t).max() < 0.02 and np.ptp(mouth_t) > 0.1, "the mouth follows the driver"
    assert np.abs(adapted - truth).mean() < 0.25 * np.abs(driver - truth).mean()


def test_adaptation_of_the_same_face_only_moves_it() -> None:
    heads = synthetic_heads(4, 1, seed=1)
    driver = np.stack([heads.render(2, 0, float(t), 128)[1] for t in range(10)])
    sim = fit_similarity(driver[0], driver[0] * 0.8 + 7.0)
    adapted = adapt_landmarks(driver, sim(driver[0]))
    assert np.allclose(adapted, sim(driver), atol=1e-3)
    assert np.allclose(adapt_landmarks(driver[:1], driver[0]), driver[:1], atol=1e-4)


def test_adapt_auto_is_on_for_other_or_unknown_people() -> None:
    assert should_adapt("auto", "syn0001", "syn0002") and should_adapt("auto", None, "syn0002")
    assert not should_adapt("auto", "syn0002", "syn0002")
    assert should_adapt("on", "a", "a") and not should_adapt("off", "a", "b")
    with pytest.raises(ValueError, match="adapt must be one of"):
        should_adapt("maybe", "a", "b")


# ------------------------------------------------------------------------------------------------ real faces
@pytest.mark.voxmini
def test_voxmini_chain_preprocess_metalearn_finetune_reenact(voxmini_shards, voxmini_dir, tmp_path) -> None:
    """Real faces end to end: shards -> meta-learning -> avatar of id90007 -> driven by id90003's video (dlib)."""
    from talkinghead.cli import finetune_main

    shards, _ = voxmini_shards
    ckpt = tiny_checkpoint(
        tmp_path / "run",
        iterations=2,
        data=[
            "data=vox2",
            f"data.root={shards}",
            "model.landmarks=ibug68",  # voxmini's shards hold 68 points
            "data.num_workers=0",
            "data.batch_size=2",
            "data.test_fraction=0.25",
            "data.augment={}",
        ],
    )
    avatar = finetune_main(
        [
            f"ckpt={ckpt}",
            "id=id90007",
            "T=8",
            "steps=2", "epochs=null",
            f"out_dir={tmp_path / 'av'}",
            "~logger",
            "progress=false",
            "preview_frames=4",
        ]
    )
    driver = sorted((voxmini_dir / "dev" / "mp4" / "id90003").glob("*/*.mp4"))[0]
    out = reenact_main(
        avatar,
        str(driver),
        tmp_path / "out.mp4",
        side_by_side=True,
        detector="dlib",
        max_frames=12,
        progress=False,
    )
    assert decode(out) == (12, 96, 32)
