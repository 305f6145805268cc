"""Frame sources for fine-tuning: one photo (the paper's one-shot case) and lists of photos as ``id``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from talkinghead.inference.shots import NoFaceError, UnknownIdError, photo_list, resolve

SYN = {"_target_": "data_modules.synthetic.SyntheticDataModule"}


@pytest.fixture()
def photos(tmp_path):
    """Three photos of one synthetic person at different sizes and framings + an oracle detector for them."""
    from conftest import OracleDetector, synthetic_heads

    heads = synthetic_heads(8, 2, seed=3)
    oracle = OracleDetector()
    paths = []
    for n, (t, size, pad) in enumerate([(0.0, 96, 0), (4.0, 128, 40), (8.0, 80, 10)]):
        img, pts = heads.render(7, 0, t, size)
        canvas = np.full((size + pad, size + 2 * pad, 3), 30, np.uint8)  # photos are framed differently
        canvas[pad:, 2 * pad :] = img
        pts = np.asarray(pts, np.float32) + np.array([2 * pad, pad], np.float32)
        oracle.add(canvas[None], pts[None])
        path = tmp_path / f"photo{n}.png"
        Image.fromarray(canvas).save(path)
        paths.append(path)
    return paths, oracle


def test_a_single_photo_is_one_frame(photos):
    paths, oracle = photos
    person = resolve(str(paths[1]), SYN, 64, detector=oracle)
    assert person.num_frames == 1 and person.video_ids == [str(paths[1])]
    shot = person.load([0])
    assert shot["frames"].shape == (1, 3, 64, 64) and shot["landmarks"].shape == (1, 68, 2)
    assert shot["frames"].min() >= -1 and shot["frames"].max() <= 1


@pytest.mark.parametrize("form", ["spaces", "commas", "glob", "list", "hydra-list-str"])
def test_a_list_of_photos_crops_each_around_its_own_face(photos, form):
    paths, oracle = photos
    text = {
        "spaces": " ".join(map(str, paths)),
        "commas": ",".join(map(str, paths)),
        "glob": str(paths[0].parent / "photo*.png"),
        "list": [str(p) for p in paths],
        "hydra-list-str": str([str(p) for p in paths]),
    }[form]
    person = resolve(text, SYN, 64, detector=oracle)
    assert person.num_frames == 3 and person.video_ids == [str(p) for p in paths]
    lm = person.load([0, 1, 2])["landmarks"].numpy()
    centres = (lm.min(axis=1) + lm.max(axis=1)) / 2
    widths = lm[:, :, 0].max(axis=1) - lm[:, :, 0].min(axis=1)
    # each photo is cropped around its own face: same place and size in every crop despite other framings
    assert np.abs(centres - centres[0]).max() < 4, centres
    assert widths.max() / widths.min() < 1.15, widths


def test_bad_photo_lists_are_clear_errors(photos, tmp_path):
    paths, oracle = photos
    with pytest.raises(UnknownIdError, match="no such image file: .*missing.jpg"):
        resolve(f"{paths[0]} {tmp_path / 'missing.jpg'}", SYN, 64, detector=oracle)
    with pytest.raises(UnknownIdError, match="no file matches"):
        resolve(str(tmp_path / "none*.jpg"), SYN, 64, detector=oracle)
    fake = tmp_path / "fake.jpg"
    fake.write_text("not an image")
    with pytest.raises(NoFaceError, match="cannot read .*fake.jpg: not a readable image"):
        resolve(str(fake), SYN, 64, detector=oracle)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((64, 64, 3), 200, np.uint8)).save(blank)
    with pytest.raises(NoFaceError, match="no usable face"):
        resolve(str(blank), SYN, 64, detector=oracle)
    person = resolve(f"{blank} {paths[0]}", SYN, 64, detector=oracle)  # one faceless photo of two: skipped
    assert person.num_frames == 1 and "blank.png" in person.notes[0]
    assert photo_list("syn0005/v01") is None and photo_list("video.mp4") is None


def test_finetune_from_one_photo(photos, tmp_path):
    """``make finetune ID=photo.png T=1``: the one-shot case end to end (FF, tiny checkpoint)."""
    from finetune_helpers import tiny_checkpoint

    from talkinghead.inference.avatar import load_avatar
    from talkinghead.cli import finetune_main

    paths, oracle = photos
    ckpt = tiny_checkpoint(tmp_path / "meta")
    for id_, T in ((str(paths[0]), 1), (f"{paths[0]} {paths[1]}", 2)):
        out = finetune_main(
            [f"ckpt={ckpt}", f"id={id_}", f"T={T}", "mode=FF", f"out_dir={tmp_path / 'av'}", "~logger",
             "progress=false"],
            detector=oracle,
        )
        avatar = load_avatar(out)
        assert avatar.T == T and Path(out).is_file()
