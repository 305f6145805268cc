"""CPU timings of the demo page's work, upload to first driven frame, on the embedded model (64², small).

    python -m talkinghead.tools.demo_timing --ckpt runs/embedded/checkpoints/last.ckpt \
        --person ../shared/data/voxmini/dev/mp4/id90001/d0/00001.mp4 \
        --driver ../shared/data/voxmini/dev/mp4/id90005/d10/00001.mp4

Runs what the page runs for one user (talkinghead.api with the page's settings: the upload's frames up to
--max-frames, T=8, FT with the model's fine-tuning recipe, then a side-by-side drive) and prints the seconds of each phase.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from talkinghead import api
from talkinghead.inference.fewshot import settings_for


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--person", required=True, help="a video of the person (a real face: dlib detects it)")
    p.add_argument("--driver", required=True, help="a driver video")
    p.add_argument("--T", type=int, default=8)
    p.add_argument("--steps", type=int, default=0, help="fine-tuning steps (0: the model's recipe)")
    p.add_argument("--max-frames", type=int, default=300)
    p.add_argument("--detector", default="auto")
    args = p.parse_args()
    t0 = time.perf_counter()
    meta = api.load_model(args.ckpt)
    t_model = time.perf_counter() - t0
    phases: dict[str, float] = {}
    last = [time.perf_counter(), "start"]

    def progress(fraction: float, message: str) -> None:
        key = message.split(":")[0]
        if key != last[1]:
            now = time.perf_counter()
            phases[last[1]] = phases.get(last[1], 0.0) + now - last[0]
            last[:] = [now, key]

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        made = api.make_avatar(args.person, T=args.T, mode="FT", meta=meta, out=Path(tmp) / "a" / "avatar.pt",
                               detector=args.detector, max_frames=args.max_frames,
                               settings=settings_for(meta.config, {"steps": args.steps} if args.steps else None),
                               progress=progress)
        t_avatar = time.perf_counter() - start
        clip = api.drive(made.path, args.driver, Path(tmp) / "o.mp4", side_by_side=True, meta=meta,
                         detector=args.detector, max_frames=args.max_frames)
        total = time.perf_counter() - start
    print(f"model load (once per server): {t_model:.1f} s")
    print(f"avatar ({made.avatar.mode}, T={made.avatar.T}, {made.avatar.steps} steps, {made.num_frames} frames "
          f"read): {t_avatar:.1f} s  [fine-tuning {made.fitted.seconds:.1f} s]")
    print(f"drive: first frame {clip.first_frame_s:.1f} s after the click; {clip.frames} frames at {clip.fps:.1f} "
          f"frames/s; {clip.seconds:.1f} s in all")
    print(f"upload to first driven frame: {t_avatar + clip.first_frame_s:.1f} s; to the whole clip: {total:.1f} s")


if __name__ == "__main__":
    main()
