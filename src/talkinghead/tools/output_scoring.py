"""How far the scores ``make evaluate`` reads off its outputs can be trusted, on procedural heads with exact truth:

    python -m talkinghead.tools.output_scoring [--persons 40] [--size 64]

1. **Landmarks on the outputs** (``talkinghead.evaluation.crossid.find_landmarks``): pose / expression NME of the 68 points
   dlib's detector finds on exact renders, and of its shape predictor fitted in one box a clip (the fallback for
   outputs where the detector finds no face), against the renderer's exact landmarks: the floor of the
   cross-identity protocol's pose and expression columns.
2. **Located gaze** (``talkinghead.evaluation.crossid.eye_reference``): person A rendered with person B's pose, expression and
   gaze, scored against B's render the way the eye scores do (irises located on both, eye-normalised): with the
   true gaze, staring ahead and turned the other way.  The true-gaze figure is the gaze error's floor at that size.

Prints two markdown tables (docs/stages.md, docs/landmarks.md).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from data_modules.procedural_heads import SyntheticHeads
from talkinghead.evaluation.crossid import eye_reference, expression_error, find_landmarks, pose_error
from talkinghead.landmarks.detectors import DlibDetector
from talkinghead.landmarks.eyes import gaze


class _FitOnly:
    """dlib whose detector never fires: what ``find_landmarks`` does on outputs where no face is found."""

    def __init__(self, dlib: DlibDetector) -> None:
        self.dlib = dlib

    def faces(self, frames: np.ndarray) -> list[list]:
        return [[] for _ in frames]

    def fit(self, frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, None]:
        return self.dlib.fit(frame, box)


def clip(heads: SyntheticHeads, who: int, motion_of: int, size: int, frames: int = 8,
         change=lambda e: e) -> tuple[np.ndarray, np.ndarray]:
    """``who`` moving as ``motion_of``'s video 0: uint8 (frames, S, S, 3) and exact (frames, 68, 2)."""
    imgs, pts = [], []
    for t in np.linspace(0, 40, frames):
        pose, expr = heads.motion(motion_of, 0, float(t))
        img, lm = heads.render_with(who, pose, change(expr), size)
        imgs.append(np.ascontiguousarray(img))
        pts.append(lm)
    return np.stack(imgs), np.stack(pts)


def landmark_floor(persons: int, size: int) -> str:
    heads = SyntheticHeads(persons, 1, seed=5)
    dlib = DlibDetector()
    errs: dict[str, tuple[list, list]] = {"detected": ([], []), "fitted in the clip's box": ([], [])}
    found = total = 0
    for p in range(persons):
        imgs, exact = clip(heads, p, p, size)
        det = find_landmarks(imgs, exact, dlib, fit=False)
        fit = find_landmarks(imgs, exact, _FitOnly(dlib))
        found, total = found + int(det.detected.sum()), total + len(imgs)
        for name, f, ok in (("detected", det, det.detected), ("fitted in the clip's box", fit, fit.fitted)):
            errs[name][0].extend(pose_error(f.points[ok], exact[ok]))
            errs[name][1].extend(expression_error(f.points[ok], exact[ok]))
    lines = [f"| {size}² procedural heads ({persons} persons x 8 frames) | frames | pose NME median / p90 "
             "| expression NME median / p90 |", "|---|---:|---:|---:|"]
    for name, (pe, ee) in errs.items():
        n = f"{found}/{total}" if name == "detected" else f"{len(pe)}/{total}"
        lines.append(f"| {name} | {n} | {np.median(pe):.3f} / {np.percentile(pe, 90):.3f} "
                     f"| {np.median(ee):.3f} / {np.percentile(ee, 90):.3f} |")
    return "\n".join(lines)


def gaze_floor(persons: int, size: int) -> str:
    heads = SyntheticHeads(2 * persons, 1, seed=5)
    variants = {
        "true gaze": lambda e: e,
        "staring ahead": lambda e: dataclasses.replace(e, gaze_x=0.0, gaze_y=0.0),
        "turned the other way": lambda e: dataclasses.replace(e, gaze_x=-e.gaze_x, gaze_y=-e.gaze_y),
    }
    errs: dict[str, list[float]] = {k: [] for k in variants}
    for a in range(persons):
        b = a + persons
        ref = gaze(eye_reference(*clip(heads, b, b, size)).astype(np.float64))
        for name, change in variants.items():
            out = gaze(eye_reference(*clip(heads, a, b, size, change=change)).astype(np.float64))
            d = np.linalg.norm(out - ref, axis=-1)
            errs[name].extend(d[np.isfinite(d)])
    lines = [f"| {size}² output vs driver ({persons} pairs x 8 frames), irises located on both | eyes scored "
             "| gaze error (eye widths), mean |", "|---|---:|---:|"]
    lines += [f"| {k} | {len(v)} | {np.mean(v):.3f} |" for k, v in errs.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--persons", type=int, default=40, help="procedural persons (default 40)")
    ap.add_argument("--size", type=int, nargs="+", default=[64, 128, 256], help="frame sizes (default 64 128 256)")
    args = ap.parse_args(argv)
    for size in args.size:
        print(landmark_floor(args.persons, size) + "\n")
        print(gaze_floor(max(2, args.persons // 4), size) + "\n")


if __name__ == "__main__":
    main()
