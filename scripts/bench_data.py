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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO)]

from data_modules.bench import (  # noqa: E402
    batch_bytes,
    describe_preprocess,
    loader_rate,
    preprocess_rate,
    serve_folder,
    synthetic_source,
    vox2_augment,
)

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
    rate, report = preprocess_rate(src, tmp / "dlib", "dlib", detector, args.preprocess_workers)
    print(describe_preprocess(rate, report, args.preprocess_workers, 32))
    usable, reason = face_alignment_status()
    if usable:
        rate, report = preprocess_rate(src, tmp / "fa", "face-alignment", None, 0)
        print(describe_preprocess(rate, report, 0, 32))
    else:
        print(f"preprocess [face-alignment]: unavailable: {reason}")
    shards = args.shards or tmp / "dlib"
    for aug_name, aug in (("no augmentation", None), ("vox2.yaml augmentation", vox2_augment())):
        for w in args.workers:
            rate = loader_rate(shards, w, aug, args.seconds)
            per = f", {rate / w:.1f} per worker" if w else ""
            print(f"loader 256², K=8, batch 8, {aug_name}, num_workers={w}: {rate:.1f} samples/s{per}")
    sent, as_float = batch_bytes(shards)
    print(f"host -> device images per 256² batch of 8, K=8: {sent / 1e6:.1f} MB as uint8 "
          f"({as_float / 1e6:.1f} MB as float32)")
    url, server = serve_folder(shards)  # remote shards: the same shards over HTTP from 127.0.0.1
    try:
        for w in args.workers:
            rate = loader_rate(url, w, vox2_augment(), args.seconds)
            print(f"loader 256², K=8, batch 8, vox2.yaml augmentation, remote shards over HTTP (127.0.0.1), "
                  f"num_workers={w}: {rate:.1f} samples/s")
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
