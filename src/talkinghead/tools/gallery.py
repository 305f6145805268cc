"""README's gallery from one meta-learning run: sample grids over iterations (PNG strip) and a driven clip (GIF).

    python -m talkinghead.tools.gallery --run /tmp/gallery_run --out docs/gallery \
        --label "python -m talkinghead.cli meta-learn run_dir=/tmp/gallery_run iterations=1000 logger=csv"

Writes ``<out>/samples_over_iterations.png`` (per sampled iteration: the first ``--rows`` rows of the run's grid,
K sources | target landmarks | generated | real) and ``<out>/driven.gif`` (driver | landmarks | avatar: an FT
avatar of one held-out person, T=8, driven by another held-out person's video, landmarks adapted), each under a
caption with the command, the iterations and the wall time.  Files are kept small (< 1 MB).
"""

from __future__ import annotations

import argparse

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from talkinghead import api
from talkinghead.safe_load import safe_load


def caption(img: np.ndarray, lines: list[str], scale: int = 1) -> np.ndarray:
    """``img`` (H, W, 3) uint8 under a white band with ``lines`` of text."""
    h = 14 * len(lines) + 6
    band = Image.new("RGB", (img.shape[1], h), "white")
    d = ImageDraw.Draw(band)
    for i, line in enumerate(lines):
        d.text((4, 3 + 14 * i), line, fill="black")
    return np.concatenate([np.asarray(band), img], axis=0)


def grid_rows(path: Path, rows: int, pad: int = 2) -> np.ndarray:
    """The first ``rows`` rows of a sample grid (visualize.make_grid: square tiles, ``pad`` px apart)."""
    img = np.asarray(Image.open(path).convert("RGB"))
    n_cols = None
    for tile in range(16, img.shape[0] + 1):  # tile size: the width is n * (tile + pad) + pad
        if (img.shape[1] - pad) % (tile + pad) == 0 and (img.shape[0] - pad) % (tile + pad) == 0:
            n_cols = (img.shape[1] - pad) // (tile + pad)
            size = tile
            break
    if n_cols is None:
        return img
    return img[: pad + rows * (size + pad)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, type=Path)
    p.add_argument("--out", default=Path("docs/gallery"), type=Path)
    p.add_argument("--label", required=True, help="the command that made the run")
    p.add_argument("--wall", default=None, help="wall time of the run, as text (default: from its files)")
    p.add_argument("--machine", default="a 2-core CPU", help="where the run trained, for the caption")
    p.add_argument("--rows", type=int, default=2)
    p.add_argument("--frames", type=int, default=40, help="frames of the driven clip")
    p.add_argument("--scale", type=int, default=2)
    args = p.parse_args()
    run = next(r for r in api.list_runs(args.run.parent) if r.path.resolve() == args.run.resolve())
    ckpt = run.checkpoint
    if ckpt is None:
        raise SystemExit(f"{args.run} has no checkpoints/last.ckpt yet")
    meta = api.load_model(ckpt)
    iterations = int(safe_load(ckpt, "checkpoint").get("global_step", 0)) // (
        1 + int(meta.config.optim.get("d_steps_per_g", 1)))
    if args.wall is None:
        files = [p for p in args.run.rglob("*") if p.is_file()]
        wall = max(p.stat().st_mtime for p in files) - min(p.stat().st_mtime for p in files)
        args.wall = f"{wall / 60:.0f} min"
    head = [args.label, f"{iterations} iterations, {args.wall} wall time on {args.machine}"]
    args.out.mkdir(parents=True, exist_ok=True)

    # sample grids over iterations (when the run has sampled any)
    samples = run.samples
    if len(samples) > 5:
        keep = np.unique(np.round(np.linspace(0, len(samples) - 1, 5)).astype(int))
        samples = [samples[i] for i in keep]
    parts = []
    for it, path in samples:
        rows = grid_rows(path, args.rows)
        parts.append(caption(rows, [f"iteration {it}: K sources | target landmarks | generated | real"]))
    if parts:
        strip = caption(np.concatenate(parts, axis=0), head)
        Image.fromarray(strip).save(args.out / "samples_over_iterations.png", optimize=True)

    # a driven clip: FT avatar of one held-out person, driven by another's video
    held = api.held_out_ids(meta)
    person = held[0]
    driver = next(v for v in held if v.split("/")[0] != person.split("/")[0])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        made = api.make_avatar(person, T=8, mode="FT", meta=meta, out=Path(tmp) / "a" / "avatar.pt")
        clip = api.drive(made.path, driver, Path(tmp) / "o.mp4", side_by_side=True, meta=meta,
                         max_frames=args.frames, synthetic_frames=args.frames)
        took = time.perf_counter() - t0
        grid = np.asarray(Image.open(made.grid_path).convert("RGB"))
        grid = caption(np.kron(grid, np.ones((args.scale, args.scale, 1), np.uint8)), head + [
            f"avatar of held-out {person} from T=8 frames: T sources (4 shown) | target landmarks | FF | FT | real",
            "(targets: frames of the video the avatar was not made from)"])
        Image.fromarray(grid).save(args.out / "avatar_samples.png", optimize=True)
        import av

        with av.open(str(clip.path)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    s = args.scale
    label = head + [f"make finetune ID={person} T=8 (FT, {made.avatar.steps} steps) + make reenact "
                    f"DRIVER={driver} SIDE=1: {took:.0f} s", "driver | landmarks | avatar"]
    gif = [Image.fromarray(caption(np.kron(f, np.ones((s, s, 1), np.uint8)), label)) for f in frames]
    gif[0].save(args.out / "driven.gif", save_all=True, append_images=gif[1:], duration=100, loop=0, optimize=True)
    for f in sorted(args.out.iterdir()):
        print(f"{f}: {f.stat().st_size / 1024:.0f} KiB")



if __name__ == "__main__":
    main()
