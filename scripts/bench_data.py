"""Data throughput: samples/s the VoxCeleb DataModule delivers, videos/min preprocessing handles per backend.

    python scripts/bench_data.py [--src VOXCELEB_TREE] [--shards SHARD_FOLDER] [--workers 0 1 2]
                                 [--frames-per-video 32 64] [--only preprocess reenact loader]

Preprocessing is timed with dlib on ``--src`` (default: ../shared/data/voxmini when present, else synthetic
heads encoded to mp4 with a known-landmarks stand-in detector, labelled as such): on real faces with per-frame
detection and one decoding thread (as before face tracking) and then with tracking and threaded decoding, back to
back; and with face-alignment where its weights are cached (else it prints why it is unavailable). Reenactment is
timed end to end (decode -> landmarks -> render -> encode, start-up excluded) on a 512² voxmini driver with the
same two settings. The loader is timed on the shards written (or on ``--shards``) at 256², K=8, batch 8, with and
without the augmentation of experiments/data/vox2.yaml, for each loader worker count.
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
    LANDMARK_SETUPS,
    batch_bytes,
    describe_preprocess,
    driver_stage_rate,
    embedded_avatar,
    preprocess_rate_landmarks,
    reenact_loop_rate,
    loader_rate,
    preprocess_rate,
    serve_folder,
    synthetic_source,
    vox2_augment,
)

DRIVER = REPO.parent / "shared" / "data" / "voxmini" / "dev" / "mp4" / "id90002" / "d3" / "00001.mp4"  # 512², 120 fr.


def bench_preprocess(args: argparse.Namespace, src: Path, detector, tmp: Path) -> None:
    """Videos/min: per-frame detection (as before tracking) then tracking, back to back; face-alignment if cached."""
    from talkinghead.landmarks.detectors import face_alignment_status

    if detector is None:  # real faces
        for n in args.frames_per_video:
            rates = {}
            for label, landmarks, threads, _ in LANDMARK_SETUPS:
                rate, report = preprocess_rate_landmarks(src, tmp / f"{landmarks}{n}", landmarks, threads,
                                                         args.preprocess_workers, n)
                rates[landmarks] = rate
                print(describe_preprocess(rate, report, args.preprocess_workers, n).replace(
                    "[dlib]", f"[dlib, {label}]"))
            print(f"preprocess at {n} frames/video: track / detect = {rates['track'] / rates['detect']:.2f}x "
                  "videos/min")
        (tmp / "dlib").symlink_to(tmp / f"track{args.frames_per_video[0]}")
    else:
        rate, report = preprocess_rate(src, tmp / "dlib", "dlib", detector, args.preprocess_workers)
        print(describe_preprocess(rate, report, args.preprocess_workers, 32))
    usable, reason = face_alignment_status()
    if usable:
        rate, report = preprocess_rate(src, tmp / "fa", "face-alignment", None, 0)
        print(describe_preprocess(rate, report, 0, 32))
    else:
        print(f"preprocess [face-alignment]: unavailable: {reason}")


def bench_reenact(args: argparse.Namespace, tmp: Path) -> None:
    """Reenactment frames/s end to end on a 512² driver: detect (as before) then track + smoothing, back to back."""
    if args.driver is None or not args.driver.is_file():
        print(f"reenact: no driver video ({args.driver}): skipped")
        return
    avatar = embedded_avatar(tmp / "avatar")
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    import torch

    print(f"reenact: torch renders with {torch.get_num_threads()} threads")
    fps = {}
    for label, landmarks, threads, smooth in LANDMARK_SETUPS:
        fps[landmarks], n = reenact_loop_rate(avatar, args.driver, tmp / f"{landmarks}.mp4", landmarks, threads,
                                              smooth)
        print(f"reenact end to end (decode -> landmarks{' -> smooth' if smooth == 'on' else ''} -> render -> "
              f"encode), embedded avatar, {n}-frame {args.driver.name} driver, {label}: {fps[landmarks]:.1f} "
              "frames/s (start-up excluded)")
    print(f"reenact: track / detect = {fps['track'] / fps['detect']:.2f}x frames/s")
    stage = {}
    for label, landmarks, threads, _ in LANDMARK_SETUPS:
        stage[landmarks] = driver_stage_rate(args.driver, landmarks, threads)
        print(f"  of which the driver stage (decode -> landmarks in crop pixels), {label}: {stage[landmarks]:.1f} frames/s")
    print(f"  driver stage: track / detect = {stage['track'] / stage['detect']:.2f}x frames/s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=None,
                   help="VoxCeleb-layout source (default: voxmini if present)")
    p.add_argument("--shards", type=Path, default=None, help="time the loader on these shards instead")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="loader worker counts to time")
    p.add_argument("--preprocess-workers", type=int, default=None, help="default: one per CPU core")
    p.add_argument("--frames-per-video", type=int, nargs="+", default=[32],
                   help="frames sampled per clip in the detect/track preprocessing comparison (e.g. 32 64)")
    p.add_argument("--driver", type=Path, default=DRIVER,
                   help="512² driver video for the end-to-end reenactment rate (default: a voxmini clip)")
    p.add_argument("--only", choices=("preprocess", "reenact", "loader"), nargs="+",
                   default=["preprocess", "reenact", "loader"], help="parts to run")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch intra-op threads while rendering (default: torch's; 1 helps on a shared, busy CPU)")
    p.add_argument("--seconds", type=float, default=15.0, help="timing window per loader setting")
    args = p.parse_args(argv)
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
    if "preprocess" in args.only:
        bench_preprocess(args, src, detector, tmp)
    if "reenact" in args.only:
        bench_reenact(args, tmp)
    if "loader" in args.only:
        shards = args.shards or tmp / "dlib"
        if not (shards / "manifest.json").is_file():
            print(f"loader: no shards ({shards}): run with the preprocess part or pass --shards")
            return 0
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
