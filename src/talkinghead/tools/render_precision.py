"""How far the fast inference path (bf16 where native) renders from the fp32 one, on a meta-learned checkpoint.

    python -m talkinghead.tools.render_precision [CKPT] [--id syn0035/v00] [--T 8]

Makes the feed-forward avatar of ``--id`` from T frames, renders 32 later frames of the same video on both paths
and prints the mean and largest absolute difference ([-1, 1] images; 1/127.5 is one uint8 level) and each path's L1
to the real frames.  CKPT defaults to the newest runs/*/checkpoints/last.ckpt.
"""
from __future__ import annotations

import argparse
import sys

from data_modules.persons import SYNTHETIC_VIDEO_LENGTH
from talkinghead.inference import shots
from talkinghead.inference.avatar import load_meta_learned, resolve_checkpoint
from talkinghead.inference.fewshot import fit_avatar
from talkinghead.inference.render import FrameRenderer
from talkinghead.speed import Speed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt", nargs="?", default=None)
    p.add_argument("--id", default="syn0035/v00", help="a video id of the checkpoint's data")
    p.add_argument("--T", type=int, default=8)
    args = p.parse_args(argv)
    meta = load_meta_learned(resolve_checkpoint(args.ckpt))
    person = shots.resolve(args.id, meta.config.data, meta.image_size, synthetic_video_length=SYNTHETIC_VIDEO_LENGTH)
    avatar = fit_avatar(meta, person.load(shots.evenly(person.num_frames // 2, args.T)), mode="FF")
    targets = person.load(list(range(person.num_frames // 2, person.num_frames))[:32])
    y, real = targets["landmark_images"], targets["frames"]
    plain = FrameRenderer(avatar.generator, avatar.avatar.psi, "cpu", Speed.plain()).render(y)
    fast_renderer = FrameRenderer(avatar.generator, avatar.avatar.psi, "cpu", Speed())
    fast = fast_renderer.render(y)
    diff = (fast - plain).abs()
    print(f"{meta.path}: {args.id}, FF avatar from T={args.T}, {len(y)} frames; fast path = {fast_renderer.speed.describe(True)}")
    print(f"fast vs plain: mean |diff| {diff.mean():.4f} ({diff.mean() * 127.5:.2f} uint8 levels), max {diff.max():.4f}")
    print(f"L1 to the real frames: plain {(plain - real).abs().mean():.4f}, fast {(fast - real).abs().mean():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
