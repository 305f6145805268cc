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

from data_modules.procedural_heads import Expression, SyntheticHeads
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


def gaze_floor(persons: int, size: int, gaze_scale: float = 1.0) -> str:
    """The located gaze's floor at ``size``; ``gaze_scale``: the heads' gaze moved that many times as far (within
    the renderer's bounds), to see what a data set with wider eye movements would allow."""
    heads = SyntheticHeads(2 * persons, 1, seed=5)

    def wider(e: Expression) -> Expression:
        return dataclasses.replace(e, gaze_x=float(np.clip(e.gaze_x * gaze_scale, -0.5, 0.5)),
                                   gaze_y=float(np.clip(e.gaze_y * gaze_scale, -0.3, 0.3)))

    variants = {
        "true gaze": lambda e: e,
        "staring ahead": lambda e: dataclasses.replace(e, gaze_x=0.0, gaze_y=0.0),
        "turned the other way": lambda e: dataclasses.replace(e, gaze_x=-e.gaze_x, gaze_y=-e.gaze_y),
    }
    errs: dict[str, list[float]] = {k: [] for k in variants}
    exact: dict[str, list[float]] = {k: [] for k in variants}
    for a in range(persons):
        b = a + persons
        ref = gaze(eye_reference(*clip(heads, b, b, size, change=wider)).astype(np.float64))
        ref_exact = gaze(exact_eyes(heads, b, b, size, wider))
        for name, change in variants.items():
            both = lambda e, c=change: c(wider(e))  # noqa: E731
            out = gaze(eye_reference(*clip(heads, a, b, size, change=both)).astype(np.float64))
            d = np.linalg.norm(out - ref, axis=-1)
            errs[name].extend(d[np.isfinite(d)])
            d = np.linalg.norm(gaze(exact_eyes(heads, a, b, size, both)) - ref_exact, axis=-1)
            exact[name].extend(d[np.isfinite(d)])
    scaled = f", gaze x{gaze_scale:g}" if gaze_scale != 1 else ""
    lines = [f"| {size}² output vs driver ({persons} pairs x 8 frames{scaled}), irises located on both | eyes scored "
             "| gaze error (eye widths), mean | the same of the exact irises |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {len(v)} | {np.mean(v):.3f} | {np.mean(exact[k]):.3f} |" for k, v in errs.items()]
    return "\n".join(lines)


def exact_eyes(heads: SyntheticHeads, who: int, motion_of: int, size: int, change, frames: int = 8) -> np.ndarray:
    """:func:`clip`'s frames as exact ``(frames, 72, 2)`` points (68 + the drawn irises; a closed eye's NaN)."""
    out = []
    for t in np.linspace(0, 40, frames):
        pose, expr = heads.motion(motion_of, 0, float(t))
        centres, radii, drawn = heads.irises_with(who, pose, change(expr), size)
        _, lm = heads.render_with(who, pose, change(expr), size)
        centres = np.where(drawn[:, None], centres, np.nan)
        rims = centres + np.stack([radii, np.zeros_like(radii)], 1)
        out.append(np.concatenate([np.asarray(lm[:68], np.float64), [centres[0], rims[0], centres[1], rims[1]]]))
    return np.stack(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--persons", type=int, default=40, help="procedural persons (default 40)")
    ap.add_argument("--size", type=int, nargs="+", default=[64, 128, 256], help="frame sizes (default 64 128 256)")
    ap.add_argument("--gaze-scale", type=float, default=1.0,
                    help="move the heads' gaze this many times as far (default 1: the embedded data's)")
    ap.add_argument("--gaze-only", action="store_true", help="only the located gaze's floor")
    args = ap.parse_args(argv)
    for size in args.size:
        if not args.gaze_only:
            print(landmark_floor(args.persons, size) + "\n")
        print(gaze_floor(max(2, args.persons // 4), size, args.gaze_scale) + "\n")


if __name__ == "__main__":
    main()
