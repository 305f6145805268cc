"""Data throughput: samples/s the VoxCeleb DataModule delivers, videos/min preprocessing handles per backend.

    python scripts/bench_data.py [--src VOXCELEB_TREE] [--shards SHARD_FOLDER] [--workers 0 1 2]

Preprocessing is timed with dlib on ``--src`` (default: ../shared/data/voxmini when present, else synthetic
heads encoded to mp4 with a known-landmarks stand-in detector, labelled as such), and with face-alignment
where its weights are cached (else it prints why it is unavailable). The loader is timed on the shards
written (or on ``--shards``) at 256², K=8, batch 8, with and without the augmentation of
experiments/data/vox2.yaml, for each loader worker count.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from data_modules.preprocess import PreprocessConfig, preprocess  # noqa: E402
from data_modules.voxceleb import VoxCeleb2DataModule  # noqa: E402

AUGMENT = {
    "HorizontalFlip": {"p": 0.5},
    "Affine": {"scale": [0.95, 1.05], "translate_percent": [-0.03, 0.03], "rotate": [-5, 5], "p": 0.5},
    "ColorJitter": {"brightness": 0.1, "contrast": 0.1, "saturation": 0.1, "hue": 0.02, "p": 0.5},
}


class KnownLandmarks:
    """Stand-in detector for synthetic heads: returns the true landmarks of the nearest rendered frame."""

    name = "known-landmarks (synthetic stand-in, not a detector)"

    def __init__(self, frames: np.ndarray, points: np.ndarray) -> None:
        self.bank = np.stack([self._thumb(f) for f in frames])
        self.points = points

    @staticmethod
    def _thumb(frame: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.resize(frame, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)

    def detect(self, frames: np.ndarray) -> list[np.ndarray | None]:
        errors = [((self.bank - self._thumb(f)) ** 2).mean(axis=(1, 2, 3)) for f in frames]
        return [self.points[int(np.argmin(e))] for e in errors]


def synthetic_source(root: Path, persons: int = 8, videos: int = 2, frames: int = 48, size: int = 256):
    """Synthetic heads as VoxCeleb-layout mp4 under ``root``; returns their ``KnownLandmarks`` detector."""
    import av

    try:
        from data_modules.synthetic import SyntheticHeads
    except ImportError:
        from data_modules.procedural_heads import SyntheticHeads
    heads = SyntheticHeads(persons, videos, seed=0)
    all_f, all_p = [], []
    for i in range(persons):
        for j in range(videos):
            path = root / f"id{i + 1:05d}" / f"v{j}" / "00001.mp4"
            path.parent.mkdir(parents=True, exist_ok=True)
            with av.open(str(path), "w") as out:
                s = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=25)
                s.width = s.height = size
                s.pix_fmt = "yuv420p"
                for t in range(frames):
                    img, pts = heads.render(i, j, float(t), size)
                    all_f.append(img)
                    all_p.append(pts)
                    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
                    for pkt in s.encode(frame):
                        out.mux(pkt)
                for pkt in s.encode():
                    out.mux(pkt)
    return KnownLandmarks(np.stack(all_f), np.stack(all_p))


def bench_preprocess(src: Path, out: Path, backend: str, detector=None, workers: int | None = None) -> str:
    """One full preprocessing run of ``src``; returns a line with videos/min."""
    cfg = PreprocessConfig(size=256, frames_per_video=32, min_face=20 if detector is not None else 80)
    report = preprocess(src, out, cfg, backend=backend, detector=detector, workers=workers, progress=False,
                        overwrite=True)
    rate = 60 * report.videos_read / report.seconds
    procs = "in-process" if workers == 0 else f"{workers or os.cpu_count()} processes"
    return (f"preprocess [{report.backend}] {report.videos_read} videos, 32 frames/video, {procs}: "
            f"{rate:.1f} videos/min ({report.kept} kept, {len(report.skipped)} skipped, "
            f"{report.seconds:.1f} s)")


def bench_loader(shards: Path, workers: int, augment: dict | None, seconds: float) -> float:
    """Samples/s of the training loader at 256², K=8, batch 8 (after the first batch)."""
    dm = VoxCeleb2DataModule(shards, K=8, image_size=256, batch_size=8, num_workers=workers, augment=augment,
                             samples_per_video=1000, pin_memory=False)
    it = iter(dm.train_dataloader())
    next(it)  # start-up (worker start, first shard) is not throughput
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += len(next(it)["video_id"])
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=None,
                   help="VoxCeleb-layout source (default: voxmini if present)")
    p.add_argument("--shards", type=Path, default=None, help="time the loader on these shards instead")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader worker counts to time")
    p.add_argument("--preprocess-workers", type=int, default=None, help="default: one per CPU core")
    p.add_argument("--seconds", type=float, default=15.0, help="timing window per loader setting")
    args = p.parse_args(argv)
    from talkinghead.landmarks.detectors import face_alignment_status

    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    voxmini = REPO.parent / "shared" / "data" / "voxmini"
    src, detector = args.src, None
    if src is None and voxmini.is_dir():
        src = voxmini
    print(f"cpu cores: {os.cpu_count()}")
    if src is None:
        print("voxmini absent: timing synthetic heads with a known-landmarks stand-in instead of dlib")
        src = tmp / "src"
        detector = synthetic_source(src)
    print(bench_preprocess(src, tmp / "dlib", "dlib", detector, args.preprocess_workers))
    usable, reason = face_alignment_status()
    if usable:
        print(bench_preprocess(src, tmp / "fa", "face-alignment", None, 0))
    else:
        print(f"preprocess [face-alignment]: unavailable: {reason}")
    shards = args.shards or tmp / "dlib"
    for aug_name, aug in (("no augmentation", None), ("vox2.yaml augmentation", AUGMENT)):
        for w in args.workers:
            rate = bench_loader(shards, w, aug, args.seconds)
            per = f", {rate / w:.1f} per worker" if w else ""
            print(f"loader 256², K=8, batch 8, {aug_name}, num_workers={w}: {rate:.1f} samples/s{per}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
