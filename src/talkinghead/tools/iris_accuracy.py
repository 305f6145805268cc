"""Accuracy and speed of the iris locator (``talkinghead.landmarks.iris``) on two sets:

    python -m talkinghead.tools.iris_accuracy [--voxmini ../shared/data/voxmini] [--marks tests/data/iris_marks.json]

* synthetic: procedural heads (``data_modules.procedural_heads``) at 256², their exact landmarks, against the exact
  iris centres the renderer drew (``SyntheticHeads.irises``); blinks included;
* voxmini: the frames of ``tests/data/iris_marks.json`` (iris centres marked by hand), 68 points from the dlib
  detector, against the marks.

Errors are distances in percent of the inter-ocular distance (eye centre to eye centre). An eye the locator calls
absent is counted, not scored: ``absent`` is open eyes reported absent, ``present`` closed eyes reported present.
Speed: ``locate_irises`` on a 256² synthetic frame, both eyes, one thread: median CPU time and fastest wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from talkinghead.config import REPO_ROOT
from talkinghead.landmarks.detectors import DlibDetector, LandmarkDetector
from talkinghead.landmarks.iris import IrisResult, inter_ocular_distance, locate_irises

MARKS = REPO_ROOT / "tests" / "data" / "iris_marks.json"
#: ``$TALKINGHEAD_VOXMINI`` or voxmini beside the repository (as the tests find it)
VOXMINI = Path(os.environ.get("TALKINGHEAD_VOXMINI") or REPO_ROOT.parent / "shared" / "data" / "voxmini")


@dataclass
class Accuracy:
    """Errors (fractions of the inter-ocular distance) of the eyes found open, and the absent/present counts."""

    errors: list[float] = field(default_factory=list)
    radius_errors: list[float] = field(default_factory=list)  # |estimate / truth - 1| where the truth is known
    open_eyes: int = 0
    open_absent: int = 0
    closed_eyes: int = 0
    closed_present: int = 0
    small_eyes: int = 0
    small_present: int = 0

    def row(self, name: str) -> str:
        e = np.asarray(self.errors) * 100
        stats = (f"{np.median(e):6.2f} % {np.percentile(e, 90):6.2f} % {e.max():6.2f} %" if len(e)
                 else "     -        -        -  ")
        small = f"  too small: {self.small_present}/{self.small_eyes} present" if self.small_eyes else ""
        return (f"{name:10s} {len(e):5d} {stats}   {self.open_absent:3d}/{self.open_eyes:<4d}"
                f"     {self.closed_present:3d}/{self.closed_eyes:<4d}{small}")


HEADER = "set         eyes   median      p90      max   open->absent  closed->present"


def synthetic_accuracy(identities: int = 8, videos: int = 2, times: np.ndarray | None = None, size: int = 256,
                       seed: int = 0) -> Accuracy:
    """The locator on procedural heads against the renderer's exact irises (drawn = open, not drawn = closed)."""
    from data_modules.procedural_heads import SyntheticHeads

    heads = SyntheticHeads(identities, videos, seed=seed, cache_mb=0)
    times = np.arange(0.0, 60.0, 2.5) if times is None else times
    acc = Accuracy()
    for i in range(identities):
        for v in range(videos):
            for t in times:
                img, pts = heads.render(i, v, float(t), size)
                centres, radii, drawn = heads.irises(i, v, float(t), size)
                res = locate_irises(img, pts)
                iod = inter_ocular_distance(pts)
                for e in range(2):
                    _score(acc, bool(drawn[e]), res, e, centres[e], iod)
                    if drawn[e] and res.present[e]:
                        acc.radius_errors.append(abs(float(res.radii[e]) / float(radii[e]) - 1.0))
    return acc


def _score(acc: Accuracy, is_open: bool, res: IrisResult, e: int, truth: np.ndarray | None, iod: float) -> None:
    """Count eye ``e`` of ``res``: its error against ``truth`` when open and found, else absent/present."""
    if is_open:
        acc.open_eyes += 1
        if res.present[e]:
            acc.errors.append(float(np.linalg.norm(res.centres[e] - truth)) / iod)
        else:
            acc.open_absent += 1
    else:
        acc.closed_eyes += 1
        acc.closed_present += int(res.present[e])


def decode_frames(video: Path, indices: set[int]) -> dict[int, np.ndarray]:
    """The frames ``indices`` of ``video`` as PyAV decodes them: uint8 (H, W, 3) RGB at full size."""
    import av  # the video decoder; only this tool and the test of the marks need it here

    out: dict[int, np.ndarray] = {}
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= max(indices):
                break
    return out


def marked_frames(voxmini: Path, marks: Path = MARKS) -> Iterator[tuple[str, int, np.ndarray, list[dict]]]:
    """Yield ``(video, frame index, frame, the marks of that frame)`` for every frame of the marks file."""
    rows = json.loads(Path(marks).read_text())["marks"]
    by_video: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_video[r["video"]][int(r["frame"])].append(r)
    for video, frames in sorted(by_video.items()):
        decoded = decode_frames(Path(voxmini) / video, set(frames))
        for index, marks_here in sorted(frames.items()):
            yield video, index, decoded[index], marks_here


def real_accuracy(voxmini: Path = VOXMINI, marks: Path = MARKS, detector: LandmarkDetector | None = None
                  ) -> Accuracy:
    """The locator on the hand-marked voxmini frames, 68 points from ``detector`` (dlib by default)."""
    detector = detector or DlibDetector()
    acc = Accuracy()
    for video, index, frame, marks_here in marked_frames(voxmini, marks):
        pts = detector.detect(frame[None])[0]
        if pts is None:
            raise RuntimeError(f"{video} frame {index}: the detector found no face")
        res = locate_irises(frame, pts)
        iod = inter_ocular_distance(pts)
        for m in marks_here:
            e = int(m["eye"])
            if m["state"] == "too_small":
                acc.small_eyes += 1
                acc.small_present += int(res.present[e])
            else:
                truth = np.array([m["x"], m["y"]]) if m["state"] == "open" else None
                _score(acc, m["state"] == "open", res, e, truth, iod)
    return acc


def time_per_frame(repeats: int = 300, size: int = 256) -> tuple[float, float]:
    """(median CPU, fastest wall) milliseconds of ``locate_irises`` for both eyes of a ``size``² synthetic frame,
    OpenCV on one thread. The CPU time (``time.process_time``) is what the call costs even on a shared, loaded
    machine, where wall-clock medians mostly measure the waiting."""
    import cv2

    from data_modules.procedural_heads import SyntheticHeads

    img, pts = SyntheticHeads(1, 1, seed=0, cache_mb=0).render(0, 0, 5.0, size)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        for _ in range(20):
            locate_irises(img, pts)
        cpu, wall = [], []
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            locate_irises(img, pts)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    finally:
        cv2.setNumThreads(threads)
    return float(np.median(cpu)) * 1e3, float(np.min(wall)) * 1e3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--voxmini", type=Path, default=VOXMINI, help="voxmini's folder (default: %(default)s)")
    ap.add_argument("--marks", type=Path, default=MARKS, help="the hand marks (default: %(default)s)")
    args = ap.parse_args(argv)
    print(HEADER)
    syn = synthetic_accuracy()
    print(syn.row("synthetic"))
    if args.voxmini.is_dir():
        print(real_accuracy(args.voxmini, args.marks).row("voxmini"))
    else:
        print(f"voxmini    skipped: {args.voxmini} is absent")
    r = np.asarray(syn.radius_errors) * 100
    print(f"radius (synthetic, vs the drawn iris's vertical semi-axis): median error {np.median(r):.0f} %, "
          f"90th percentile {np.percentile(r, 90):.0f} %")
    med, best = time_per_frame()
    print(f"time: {med:.3f} ms CPU per 256² frame, both eyes (median of 300; fastest wall-clock {best:.3f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
