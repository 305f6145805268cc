"""Landmark jitter of a near-static clip, raw vs One-Euro smoothed, for tracked and per-frame detected landmarks.

    python -m talkinghead.tools.landmark_jitter [--clip VIDEO] [--gif docs/landmark_smoothing.gif]

Jitter (``talkinghead.landmarks.smooth.jitter``): mean frame-to-frame motion of the 68 points after removing the
head's similarity motion, in pixels of the 256² face crop that preprocessing and reenactment use (one crop box for
the clip, ``talkinghead.inference.shots.crop_faces``).  Default clip: voxmini's id90001/d0/00001 (78 frames at 25 fps, the
least head motion of voxmini).  ``--gif`` writes a side-by-side GIF: raw tracked landmarks | smoothed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from talkinghead.config import REPO_ROOT

REPO = REPO_ROOT

SIZE = 256


def side_by_side_gif(crops: np.ndarray, raw: np.ndarray, smoothed: np.ndarray, path: Path, fps: float,
                     zoom: tuple[int, int, int] = (48, 56, 160), frames: int = 40) -> Path:
    """Raw | smoothed landmarks (red dots) over the face crop, zoomed on ``(x0, y0, side)``; an optimised GIF."""
    import cv2
    from PIL import Image

    x0, y0, side = zoom
    scale = 160 / side
    images = []
    for i in range(min(frames, len(crops))):
        panels = []
        for pts in (raw[i], smoothed[i]):
            img = cv2.resize(crops[i][y0 : y0 + side, x0 : x0 + side], (160, 160), interpolation=cv2.INTER_LINEAR)
            for x, y in (pts - np.array([x0, y0])) * scale:
                cv2.circle(img, (int(round(x * 4)), int(round(y * 4))), 4, (255, 40, 40), -1, cv2.LINE_AA, shift=2)
            panels.append(img)
        images.append(Image.fromarray(np.concatenate([panels[0], np.full((160, 4, 3), 255, np.uint8), panels[1]],
                                                     axis=1)).quantize(32))
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0, optimize=True)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", type=Path,
                   default=REPO.parent / "shared" / "data" / "voxmini" / "dev" / "mp4" / "id90001" / "d0" / "00001.mp4")
    p.add_argument("--gif", type=Path, default=None, help="write raw | smoothed landmarks as a GIF here")
    args = p.parse_args(argv)
    from talkinghead.landmarks.smooth import jitter, smooth_landmarks
    from talkinghead.inference.shots import crop_faces, make_landmark_detector, read_user_frames

    frames, fps = read_user_frames(args.clip)
    print(f"{args.clip}: {len(frames)} frames at {fps:g} fps, 68 points on {SIZE}² face crops")
    for mode in ("track", "detect"):
        crops, points, found = crop_faces(frames, make_landmark_detector("dlib", mode), SIZE, hold=True)
        smoothed = smooth_landmarks(points, fps)
        print(f"  {mode:6s} jitter raw {jitter(points):.3f} px, smoothed {jitter(smoothed):.3f} px "
              f"({jitter(points) / max(jitter(smoothed), 1e-9):.1f}x steadier; faces found {found.sum()}/{len(found)})")
        if mode == "track" and args.gif:
            out = side_by_side_gif(crops, points, smoothed, args.gif, fps)
            print(f"  wrote {out} ({out.stat().st_size / 1024:.0f} KiB): raw | smoothed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
