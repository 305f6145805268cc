"""README's full-frame picture: a face pasted back into its whole picture (``talkinghead.inference.paste``).

    python -m talkinghead.tools.full_frame_figure [--out docs/full_frame.png] [--ckpt runs/<run>/checkpoints/last.ckpt]

Two procedural portraits (``data_modules.portraits``, exact landmarks): a painting-like one and a photo-like one
whose face sits at the picture's edge (its crop box leaves the picture).  Per row: the source picture with its
fixed crop box | the soft mask | two full-frame outputs | a hard paste of the same face (binary mask, no colour
matching) for contrast.  With ``--ckpt`` the pasted faces are the model's: an FF avatar of the portrait (T=1)
driven by a held-out synthetic person's motion.  Without it they stand in for a render: frames of the same head at
other times, blurred and with their colours shifted as a generator's output would be.  Kept small (< 300 KB).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from talkinghead.config import REPO_ROOT

REPO = REPO_ROOT

SCENES = {  # name: (offset of the head square, painted)
    "painting": ((70, 20), True),
    "face at the edge": ((-35, 70), False),
}
TIMES = (4.0, 9.0)


class KnownLandmarks:
    """A ``LandmarkDetector`` for the portrait whose landmarks are known (dlib does not fire on cartoon heads)."""

    name = "known"

    def __init__(self, points: np.ndarray) -> None:
        self.points = points

    def detect(self, frames: np.ndarray) -> list[np.ndarray | None]:
        return [self.points for _ in frames]


def caption(img: np.ndarray, text: str) -> np.ndarray:
    from PIL import Image, ImageDraw

    band = Image.new("RGB", (img.shape[1], 16), "white")
    ImageDraw.Draw(band).text((3, 2), text, fill="black")
    return np.concatenate([np.asarray(band), img], axis=0)


def renders(name: str, heads, src, pts, box, size: int, ckpt: str | None):
    """[(face crop (S, S, 3), its landmarks (68, 2) crop pixels)] for the output columns."""
    import cv2

    from data_modules.portraits import portrait
    from talkinghead.crop import crop_frame, landmarks_to_crop

    offset, painted = SCENES[name]
    if ckpt is None:
        out = []
        for t in TIMES:
            other, opts = portrait(heads, 1, 0, t, offset=offset, painted=painted)
            face = cv2.GaussianBlur(crop_frame(other, box, size).astype(np.float32), (0, 0), 1.0)
            face = np.clip(face * np.array([0.85, 0.95, 1.15]) + 25, 0, 255).astype(np.uint8)
            out.append((face, landmarks_to_crop(opts, box, size)))
        return out
    import tempfile

    from PIL import Image

    from talkinghead import api
    from talkinghead.inference.avatar import AvatarRenderer, load_meta_learned
    from talkinghead.inference.reenact import driver_points, load_driver
    from talkinghead.visualize import to_uint8

    meta = load_meta_learned(ckpt)
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "portrait.png"
        Image.fromarray(src).save(photo)
        made = api.make_avatar(str(photo), T=1, mode="FF", meta=meta, detector=KnownLandmarks(pts),
                               out=Path(tmp) / "avatar.pt")
    driver = api.held_out_ids(meta)[-1]
    drv = load_driver(driver, made.avatar.data_config, meta.image_size, synthetic_frames=16)
    points, _ = driver_points(drv, made.avatar, "on")
    renderer = AvatarRenderer(made.avatar, meta)
    picks = [4, 11]
    return [(to_uint8(renderer.render_points(points[[i]])[0]), points[i]) for i in picks]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "full_frame.png")
    p.add_argument("--ckpt", default=None, help="a meta-learned checkpoint: paste the model's renders")
    args = p.parse_args(argv)
    import cv2
    from PIL import Image

    from data_modules.portraits import portrait
    from data_modules.preprocess import PreprocessConfig
    from talkinghead.crop import face_track, landmarks_to_crop
    from data_modules.procedural_heads import SyntheticHeads
    from talkinghead.inference.paste import crop_to_frame, face_mask, paste_back

    size = 64
    if args.ckpt:
        from talkinghead.inference.avatar import load_meta_learned

        size = load_meta_learned(args.ckpt).image_size
    heads = SyntheticHeads(4, 2, seed=0)
    rows = []
    for name, (offset, painted) in SCENES.items():
        src, pts = portrait(heads, 1, 0, 0.0, offset=offset, painted=painted)
        box, _, _ = face_track([pts], PreprocessConfig(size=size, min_face=1, min_detected=0, min_frames=1))
        src_lms = landmarks_to_crop(pts, box, size)
        faces = renders(name, heads, src, pts, box, size, args.ckpt)
        x0, y0, side = (int(round(v)) for v in box)
        boxed = src.copy()
        cv2.rectangle(boxed, (x0, y0), (x0 + side - 1, y0 + side - 1), (255, 255, 255), 1)
        mask = face_mask([src_lms, faces[0][1]], size)
        warped, (rx0, ry0, rx1, ry1) = crop_to_frame(mask, box, src.shape, replicate=False)
        full_mask = np.zeros(src.shape[:2], np.float32)
        full_mask[ry0:ry1, rx0:rx1] = warped
        shown_mask = (src * 0.35 + full_mask[..., None] * np.array([255, 220, 80]) * 0.65).astype(np.uint8)
        outs = [paste_back(src, box, f, face_mask([src_lms, lm], size)) for f, lm in faces]
        hard = paste_back(src, box, faces[0][0], (mask > 0.5).astype(np.float32), colour=False)
        tiles = [caption(boxed, f"{name}: source, crop box"), caption(shown_mask, "soft mask"),
                 caption(outs[0], "full frame, t1"), caption(outs[1], "full frame, t2"),
                 caption(hard, "hard paste (contrast)")]
        gap = np.full((tiles[0].shape[0], 4, 3), 255, np.uint8)
        rows.append(np.concatenate(sum(([t, gap] for t in tiles), [])[:-1], axis=1))
    what = (f"faces: an FF avatar of the portrait from {args.ckpt}" if args.ckpt else
            "faces: the head's own frames at other times, blurred and colour-shifted, standing in for a render")
    img = caption(np.concatenate([rows[0], np.full((4, rows[0].shape[1], 3), 255, np.uint8), rows[1]]),
                  f"python -m talkinghead.tools.full_frame_figure{' --ckpt ' + args.ckpt if args.ckpt else ''} -- {what}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KB, {img.shape[1]}x{img.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
