"""The README's eye figure: a held-out synthetic person looking left, ahead, right and blinking, beside what a
68-point model and an iris model render from those landmarks (and the eye scores of each, on those frames):

    python -m talkinghead.tools.eyes_figure --ckpt68 runs/embedded68/checkpoints/last.ckpt \\
        --ckpt-iris runs/embedded/checkpoints/last.ckpt [--person syn0020/v00] [--out docs/eyes.png]

Both models must be embedded-data models (their data module renders the person with an exact gaze).  Each
model's avatar is the person's own FT avatar from 8 frames of its video (the model's fine-tuning recipe), driven
by the person's own landmarks in one pose with four eye states, so what differs between the rows is the model.
Rows: driver | its landmark image (iris model) | 68-point model | iris model; 3x enlarged (nearest).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from data_modules.persons import open_source
from data_modules.synthetic import parse_video_id
from talkinghead.inference import shots as shots_mod
from talkinghead.inference.avatar import load_meta_learned
from talkinghead.evaluation.crossid import eye_reference, find_landmarks
from talkinghead.inference.fewshot import fit_avatar, settings_for
from talkinghead.landmarks.detectors import DlibDetector
from talkinghead.landmarks.draw import landmark_image_tensor
from talkinghead.landmarks.eyes import eye_aspect_ratio, gaze
from talkinghead.landmarks.sets import recorded_set, with_irises
from talkinghead.visualize import from_uint8, make_grid, save_png, to_uint8

#: the four eye states: (label, gaze_x, blink)
STATES = (("left", -0.9, 0.0), ("ahead", 0.0, 0.0), ("right", 0.9, 0.0), ("blink", 0.0, 1.0))


def driver_frames(source, person: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The person in frame 0's pose with each of :data:`STATES`: uint8 (4, S, S, 3), exact (4, 72, 2) points."""
    identity, video = parse_video_id(person)
    heads = source.heads
    pose, expr = heads.motion(identity, video, 0.0)
    imgs, pts = [], []
    for _, gx, blink in STATES:
        e = dataclasses.replace(expr, gaze_x=gx, gaze_y=0.0, blink=blink)
        img, lm = heads.render_with(identity, pose, e, size, video=video)
        imgs.append(img)
        pts.append(with_irises(lm, *heads.irises_with(identity, pose, e, size)))
    return np.stack(imgs), np.stack(pts)


def render_rows(ckpt: str, person: str, steps: int = 0) -> tuple[torch.Tensor, np.ndarray, np.ndarray, str]:
    """One model's four outputs (4, 3, S, S), the driver frames and points, and the model's landmark set
    (``steps``: fine-tuning steps, 0 = the model's recipe)."""
    meta = load_meta_learned(ckpt)
    size, landmark_set = meta.image_size, recorded_set(meta.config.model)
    source = open_source(meta.config.data, size)
    imgs, pts = driver_frames(source, person, size)
    target = pts if landmark_set == "ibug68+iris" else pts[:, :68]
    data = shots_mod.resolve(person, meta.config.data, size)
    shots = data.load(shots_mod.evenly(data.num_frames // 2, 8))
    settings = settings_for(meta.config, {"steps": steps, "epochs": None, "early_stop_window": 0} if steps else None)
    fitted = fit_avatar(meta, shots, mode="FT", settings=settings, person_id=person, source=person)
    y = torch.stack([landmark_image_tensor(p, size) for p in target])
    return fitted.render(y), imgs, pts, landmark_set


def scores(frames: np.ndarray, driver_imgs: np.ndarray, driver_pts: np.ndarray) -> str:
    """Gaze (eye-normalised x of the irises, mean of both eyes) and eye opening of each frame, located as the eye
    scores locate them."""
    found = find_landmarks(frames, driver_pts, DlibDetector())
    g = gaze(eye_reference(frames, found.points).astype(np.float64))[..., 0]
    ear = eye_aspect_ratio(found.points).mean(-1)
    gd = gaze(eye_reference(driver_imgs, driver_pts).astype(np.float64))[..., 0]
    def x(v: np.ndarray) -> str:  # an eye whose iris is not found is left out; none found: "absent"
        return f"{np.mean(v[np.isfinite(v)]):+.2f}" if np.isfinite(v).any() else "absent"

    cells = [f"{s[0]}: gaze x {x(a)} (driver {x(b)}), opening {e:.2f}" for s, a, b, e in zip(STATES, g, gd, ear)]
    return "; ".join(cells)


def enlarge(images: torch.Tensor, factor: int = 3) -> list[torch.Tensor]:
    return list(images.repeat_interleave(factor, -1).repeat_interleave(factor, -2))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--ckpt68", required=True, help="checkpoint of a model of landmark set ibug68")
    ap.add_argument("--ckpt-iris", required=True, help="checkpoint of a model of landmark set ibug68+iris")
    ap.add_argument("--person", default="", help="a held-out video id (default: the iris model's first)")
    ap.add_argument("--out", default="docs/eyes.png", help="where the PNG goes (default docs/eyes.png)")
    ap.add_argument("--steps", type=int, default=0, help="fine-tuning steps (default 0: each model's recipe)")
    args = ap.parse_args(argv)
    person = args.person
    if not person:
        meta = load_meta_learned(args.ckpt_iris)
        person = open_source(meta.config.data, meta.image_size).held_out_video_ids()[0]
    torch.manual_seed(0)
    out68, imgs, pts, set68 = render_rows(args.ckpt68, person, args.steps)
    out_iris, _, _, set_iris = render_rows(args.ckpt_iris, person, args.steps)
    if (set68, set_iris) != ("ibug68", "ibug68+iris"):
        raise SystemExit(f"error: --ckpt68 is of set {set68} and --ckpt-iris of {set_iris}: need ibug68 and ibug68+iris")
    size = imgs.shape[1]
    lm_iris = torch.stack([landmark_image_tensor(p, size) for p in pts])
    grid = make_grid([enlarge(from_uint8(imgs)), enlarge(lm_iris), enlarge(out68), enlarge(out_iris)])
    path = save_png(grid, args.out)
    print(f"{path}: {person}; rows: driver | landmarks (iris set) | ibug68 model | ibug68+iris model; "
          f"columns: {', '.join(s[0] for s in STATES)}")
    for name, out in (("ibug68", out68), ("ibug68+iris", out_iris)):
        print(f"{name:12s} {scores(to_uint8(out), imgs, pts)}")


if __name__ == "__main__":
    main()
