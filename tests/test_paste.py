"""Full-frame output (talkinghead.inference.paste): the rendered face pasted back into the avatar's source frame.

Scenes are procedural portraits (data_modules.portraits): a synthetic head with exact landmarks on a textured
canvas, as a photo or painted.  The "render" pasted back is another frame of the same head (other expression),
blurred and with its colours off, as a generator's output is.
"""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from conftest import OracleDetector
from data_modules.portraits import portrait
from data_modules.preprocess import PreprocessConfig
from talkinghead.crop import crop_frame, face_track, landmarks_to_crop
from data_modules.procedural_heads import SyntheticHeads
from finetune_helpers import tiny_checkpoint
from talkinghead.inference.avatar import AvatarError, load_avatar
from talkinghead.inference.paste import box_roi, crop_to_frame, face_mask, paste_back, paste_frames

S = 64


@pytest.fixture(scope="module")
def heads() -> SyntheticHeads:
    return SyntheticHeads(4, 2, seed=0)


def scene(heads: SyntheticHeads, offset: tuple[int, int], painted: bool):
    """(source (H, W, 3), box, render (S, S, 3), source landmarks, render landmarks) -- crop pixels for both."""
    src, pts = portrait(heads, 1, 0, 0.0, offset=offset, painted=painted)
    box, _, _ = face_track([pts], PreprocessConfig(size=S, min_face=1, min_detected=0, min_frames=1))
    other, other_pts = portrait(heads, 1, 0, 5.0, offset=offset, painted=painted)
    face = cv2.GaussianBlur(crop_frame(other, box, S).astype(np.float32), (0, 0), 1.0)
    face = np.clip(face * np.array([0.8, 0.9, 1.2]) + 30, 0, 255).astype(np.uint8)  # colours off, as G's are
    return src, box, face, landmarks_to_crop(pts, box, S), landmarks_to_crop(other_pts, box, S)


def frame_mask(mask: np.ndarray, box: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The crop-pixel mask warped onto the whole frame (0 outside the box)."""
    warped, _ = crop_to_frame(mask, box, shape, replicate=False)
    full = np.zeros(shape[:2], np.float32)
    rx0, ry0, rx1, ry1 = box_roi(box, shape)
    full[ry0:ry1, rx0:rx1] = warped
    return full


def gradient(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))


def seam_gradients(src, out, full_mask, hard: bool = False) -> tuple[float, float]:
    """(mean gradient of ``out`` on the seam, mean gradient of ``src`` near the seam).  The seam: where the mask
    crosses 0.5 (its edge pixels for a hard mask); near it: the feathered band, grown by 2 px."""
    if hard:
        b = (full_mask > 0.5).astype(np.uint8)
        seam = (cv2.dilate(b, np.ones((3, 3))) - cv2.erode(b, np.ones((3, 3)))) > 0
        band = seam
    else:
        seam = (full_mask > 0.3) & (full_mask < 0.7)
        band = (full_mask > 0) & (full_mask < 1)
    near = cv2.dilate(band.astype(np.uint8), np.ones((5, 5))) > 0
    return float(gradient(out)[seam].mean()), float(gradient(src)[near].mean())


CASES = {
    "photo": ((60, 30), False),
    "painting": ((60, 30), True),
    "face at the top-left edge": ((-40, -30), False),
    "painting, face at the bottom-right edge": ((150, 90), True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_paste_back_keeps_the_frame_outside_the_mask_and_leaves_no_seam(heads, name) -> None:
    offset, painted = CASES[name]
    src, box, face, src_lms, face_lms = scene(heads, offset, painted)
    mask = face_mask([src_lms, face_lms], S)
    out = paste_back(src, box, face, mask)
    assert out.shape == src.shape and out.dtype == np.uint8
    full = frame_mask(mask, box, src.shape)
    outside = full == 0
    assert 0.5 < outside.mean() < 0.98, "the mask covers the face, not the picture"
    assert np.array_equal(out[outside], src[outside]), "outside the mask the output is the source frame"
    inside = full > 0.9
    assert np.abs(out[inside].astype(int) - src[inside]).mean() > 3, "the face was pasted in"
    seam, own = seam_gradients(src, out, full)
    assert seam <= own, f"seam gradient {seam:.1f} > the image's own {own:.1f} near it"


def test_the_seam_check_fails_for_a_hard_paste_and_without_colour_matching(heads) -> None:
    """What the seam test guards against: a binary mask, or a feathered one with the render's colours, shows."""
    src, box, face, src_lms, face_lms = scene(heads, (60, 30), False)
    mask = face_mask([src_lms, face_lms], S)
    hard = (mask > 0.5).astype(np.float32)
    seam, own = seam_gradients(src, paste_back(src, box, face, hard, colour=False), frame_mask(hard, box, src.shape),
                               hard=True)
    assert seam > 1.5 * own
    seam, own = seam_gradients(src, paste_back(src, box, face, mask, colour=False), frame_mask(mask, box, src.shape))
    assert seam > own


def test_a_face_at_the_edge_has_a_crop_box_leaving_the_image_and_pastes_inside_it(heads) -> None:
    src, box, face, src_lms, face_lms = scene(heads, (-40, -30), True)
    assert box[0] < 0 and box[1] < 0, "the crop leaves the image (crop_frame pads it)"
    frames = list(paste_frames([face, face], np.stack([face_lms, face_lms]), src, box, src_lms))
    assert len(frames) == 2 and all(f.shape == src.shape for f in frames)
    assert np.array_equal(frames[0], frames[1]), "a fixed box: the same render lands in the same place"
    # the inverse warp is the inverse of crop_frame: cropping the output again gives back the blend's crop
    recrop = crop_frame(frames[0], box, S)
    assert recrop.shape == (S, S, 3)
    m = face_mask([src_lms, face_lms], S)
    inner = (m > 0.99) & (crop_frame(np.full_like(src, 255), box, S)[..., 0] == 255)  # inside the image too
    assert inner.sum() > 50


def test_mask_is_soft_zero_at_the_crop_border_and_covers_both_faces(heads) -> None:
    src, box, face, src_lms, face_lms = scene(heads, (60, 30), False)
    m = face_mask([src_lms, face_lms], S)
    assert m.dtype == np.float32 and m.min() == 0.0 and m.max() == pytest.approx(1.0, abs=1e-3)
    assert not m[0].any() and not m[-1].any() and not m[:, 0].any() and not m[:, -1].any()
    for pts in (src_lms, face_lms):
        inside = np.round(pts).astype(int).clip(0, S - 1)
        assert (m[inside[:, 1], inside[:, 0]] > 0.5).all(), "every landmark lies inside the mask"
    soft = ((m > 0.05) & (m < 0.95)).sum()
    assert soft > 0.2 * (m >= 0.95).sum(), "feathered, not a hard edge"


# ------------------------------------------------------------------------------------------------ the pipeline
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("meta") / "run")


def decode_first(path: Path) -> tuple[int, np.ndarray]:
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return len(frames), frames[0]


def test_a_photo_avatar_keeps_its_frame_and_full_frame_reenactment_is_the_photos_size(heads, ckpt, tmp_path) -> None:
    from PIL import Image

    from talkinghead import api

    photo, pts = portrait(heads, 2, 0, 0.0, canvas=(180, 240), head_size=110, offset=(-20, 50), painted=True)
    path = tmp_path / "painting.png"
    Image.fromarray(photo).save(path)
    oracle = OracleDetector()
    oracle.add(photo[None], pts[None])
    made = api.make_avatar(str(path), T=1, mode="FF", ckpt=ckpt, detector=oracle, out=tmp_path / "av" / "avatar.pt")
    av_ = load_avatar(made.path)
    assert av_.has_source_frame and np.array_equal(av_.source_frame(), photo), "the photo, losslessly"
    assert av_.crop_box[0] < 0, "this face's crop leaves the picture"
    assert torch.allclose(av_.source_landmarks, made.shots["landmarks"][0][:68])  # the 68 (irises: not for the mask)
    out = api.drive(made.path, "syn0005/v01", tmp_path / "full.mp4", full=True, synthetic_frames=4)
    assert out.full
    n, first = decode_first(out.path)
    assert n == 4 and first.shape == photo.shape
    # away from the face the video shows the painting (up to H.264's loss)
    assert np.abs(first[:, 200:].astype(int) - photo[:, 200:]).mean() < 4
    plain = api.drive(made.path, "syn0005/v01", tmp_path / "crop.mp4", synthetic_frames=4)
    assert decode_first(plain.path)[1].shape == (32, 32, 3)


def test_full_frame_with_an_avatar_made_before_it_is_a_one_line_error(ckpt, tmp_path, capsys) -> None:
    from talkinghead.inference.avatar import load_meta_learned
    from talkinghead.cli import main
    from talkinghead.inference.fewshot import fit_avatar
    from talkinghead.inference.shots import evenly, resolve

    meta = load_meta_learned(ckpt)
    person = resolve("syn0004/v00", meta.config.data, meta.image_size, synthetic_video_length=16)
    avatar = fit_avatar(meta, person.load(evenly(8, 1)), mode="FF", person_id="syn0004", source="syn0004/v00").avatar
    old = avatar.to_dict()
    for key in ("source_png", "crop_box", "source_landmarks"):  # the avatar format before full-frame output
        old.pop(key)
    path = tmp_path / "old" / "avatar.pt"
    path.parent.mkdir()
    torch.save(old, path)
    assert not load_avatar(path).has_source_frame, "an old avatar still loads"
    with pytest.raises(AvatarError, match="lacks its source frame: remake it with `make finetune ID=syn0004/v00"):
        from talkinghead import api

        api.drive(path, "syn0005/v01", tmp_path / "x.mp4", full=True)
    assert main(["reenact", str(path), "syn0005/v01", str(tmp_path / "y.mp4"), "--full", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lacks its source frame" in err
    assert not list(tmp_path.glob("*.mp4")), "nothing written"


def test_an_avatar_of_a_data_id_pastes_into_its_own_crop(ckpt, tmp_path) -> None:
    from talkinghead import api

    made = api.make_avatar("syn0004/v00", T=1, mode="FF", ckpt=ckpt, out=tmp_path / "a" / "avatar.pt",
                           synthetic_video_length=8, preview_frames=2)
    av_ = load_avatar(made.path)
    assert av_.crop_box == [0.0, 0.0, 32.0] and av_.source_frame().shape == (32, 32, 3)
    out = api.drive(made.path, "syn0005/v01", tmp_path / "full.mp4", full=True, synthetic_frames=3)
    assert decode_first(out.path)[0] == 3 and decode_first(out.path)[1].shape == (32, 32, 3)


def test_a_video_avatar_keeps_its_first_frame_at_the_videos_size(heads, ckpt, tmp_path) -> None:
    from conftest import write_mp4
    from talkinghead import api

    frames, pts = zip(*(portrait(heads, 3, 1, float(t), canvas=(120, 160), head_size=90, offset=(40, 20))
                        for t in range(4)))
    video = tmp_path / "clip.mp4"
    write_mp4(video, np.stack(frames))
    oracle = OracleDetector()
    oracle.add(np.stack(frames), np.stack(pts))
    made = api.make_avatar(str(video), T=2, mode="FF", ckpt=ckpt, detector=oracle, out=tmp_path / "v" / "avatar.pt",
                           preview_frames=2)
    av_ = load_avatar(made.path)
    first = av_.source_frame()
    assert first.shape == (120, 160, 3)
    assert np.abs(first.astype(int) - frames[0]).mean() < 6, "the clip's first frame (H.264-decoded)"
    assert torch.allclose(av_.source_landmarks, made.shots["landmarks"][0][:68])  # the 68 (irises: not for the mask)
