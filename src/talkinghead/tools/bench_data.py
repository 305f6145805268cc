"""Data throughput: samples/s the VoxCeleb DataModule delivers, videos/min preprocessing handles per backend,
reenactment frames/s end to end (``make bench-data``; ``make bench`` uses the loader and preprocessing rates).

    python -m talkinghead.tools.bench_data [--src VOXCELEB_TREE] [--shards SHARD_FOLDER] [--workers 0 1 2]
                                 [--frames-per-video 32 64] [--only preprocess reenact loader]

Preprocessing is timed with dlib on ``--src`` (default: ../shared/data/voxmini when present, else synthetic
heads encoded to mp4 with a known-landmarks stand-in detector, labelled as such): on real faces with per-frame
detection and one decoding thread (as before face tracking) and then with tracking and threaded decoding, back to
back; and with face-alignment where its weights are cached (else it prints why it is unavailable). Reenactment is
timed end to end (decode -> landmarks -> render -> encode, start-up excluded) on a 512² voxmini driver with the
same two settings. The loader is timed on the shards written (or on ``--shards``) at 256², K=8, batch 8, with and
without the augmentation of experiments/data/vox2.yaml, for each loader worker count.

Where no real videos are at hand, ``synthetic_source`` writes procedural heads as VoxCeleb-layout mp4 files with a
stand-in detector that returns their true landmarks (labelled as such).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from data_modules.preprocess import PreprocessConfig, Report as PreprocessReport, preprocess
from data_modules.voxceleb import VoxCeleb2DataModule
from talkinghead.config import REPO_ROOT, compose


def vox2_augment() -> dict[str, Any]:
    """The augmentation of experiments/data/vox2.yaml (what training uses)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose("meta_learn", ["data=vox2"]).data.augment)


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


def preprocess_rate(
    src: Path, out: Path, backend: str, detector: Any = None, workers: int | None = None, frames_per_video: int = 32
) -> tuple[float, PreprocessReport]:
    """One full preprocessing run of ``src`` into ``out``; returns (videos/min, its report)."""
    cfg = PreprocessConfig(size=256, frames_per_video=frames_per_video, min_face=20 if detector is not None else 80)
    report = preprocess(src, out, cfg, backend=backend, detector=detector, workers=workers, progress=False,
                        overwrite=True)
    return 60 * report.videos_read / max(report.seconds, 1e-9), report


def describe_preprocess(rate: float, report: PreprocessReport, workers: int | None, frames_per_video: int) -> str:
    procs = "in-process" if workers == 0 else f"{workers or os.cpu_count()} processes"
    return (f"preprocess [{report.backend}] {report.videos_read} videos, {frames_per_video} frames/video, {procs}: "
            f"{rate:.1f} videos/min ({report.kept} kept, {len(report.skipped)} skipped, {report.seconds:.1f} s)")


def loader_rate(
    shards: Path, workers: int, augment: dict | None, seconds: float, image_size: int = 256, K: int = 8,
    batch_size: int = 8,
) -> float:
    """Samples/s of the VoxCeleb training loader (default 256², K=8, batch 8), after its first batch."""
    dm = VoxCeleb2DataModule(shards, K=K, image_size=image_size, batch_size=batch_size, num_workers=workers,
                             augment=augment, samples_per_video=1000, pin_memory=True)  # pinned where CUDA is
    it = iter(dm.train_dataloader())
    next(it)  # start-up (worker start, first shard) is not throughput
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += len(next(it)["video_id"])
    return n / (time.perf_counter() - t0)


# ------------------------------------------------------------------------------- tracking vs detection (issue 13)
class decode_threads:
    """Context: ``data_modules.sources.DECODE_THREADS`` set to ``value`` (None = one decoding thread, as before)."""

    def __init__(self, value: str | None) -> None:
        self.value = value

    def __enter__(self) -> None:
        from data_modules import sources

        self.old, sources.DECODE_THREADS = sources.DECODE_THREADS, self.value

    def __exit__(self, *exc: object) -> None:
        from data_modules import sources

        sources.DECODE_THREADS = self.old


#: the two ways of finding landmarks compared by ``make bench-data``: (label, --landmarks, decode threads, smooth)
LANDMARK_SETUPS = (
    ("detect (every frame, one decoding thread: before tracking)", "detect", None, "off"),
    ("track (key frames + tracking, threaded decoding)", "track", "AUTO", "on"),
)


def preprocess_rate_landmarks(
    src: Path, out: Path, landmarks: str, threads: str | None, workers: int | None = None, frames_per_video: int = 32
) -> tuple[float, PreprocessReport]:
    """``preprocess_rate`` with dlib and ``--landmarks`` = ``landmarks``, decoding with ``threads``."""
    cfg = PreprocessConfig(size=256, frames_per_video=frames_per_video)
    with decode_threads(threads):
        report = preprocess(src, out, cfg, backend="dlib", workers=workers, progress=False, overwrite=True,
                            landmarks=landmarks)
    return 60 * report.videos_read / max(report.seconds, 1e-9), report


def embedded_avatar(root: Path) -> Path:
    """An avatar of the embedded model (64², meta-learned for one iteration: timing needs no good weights)."""
    from talkinghead.inference.avatar import load_meta_learned, save_avatar
    from talkinghead.config import compose
    from talkinghead.inference.fewshot import fit_avatar as make_avatar
    from talkinghead.inference.shots import evenly, resolve
    from talkinghead.training.train import build_meta_learning

    cfg = compose("meta_learn", ["experiment=embedded", "~logger", "iterations=1", f"run_dir={root / 'run'}",
                                 "trainer.enable_progress_bar=false", "callbacks.val_every_n_iterations=1000",
                                 "callbacks.sample_every_n_iterations=1000"])
    run = build_meta_learning(cfg)
    run.trainer.num_sanity_val_steps = 0
    run.fit()
    meta = load_meta_learned(root / "run" / "checkpoints" / "last.ckpt")
    person = resolve("syn0004/v00", meta.config.data, meta.image_size, synthetic_video_length=8)
    result = make_avatar(meta, person.load(evenly(8, 2)), mode="FF", person_id="syn0004", source="syn0004/v00")
    return save_avatar(result.avatar, root / "avatar.pt")


def reenact_loop_rate(avatar: Path, driver: Path, out: Path, landmarks: str, threads: str | None,
                      smooth: str) -> tuple[float, int]:
    """Frames/s of ``make reenact`` on ``driver`` (decode -> landmarks -> render -> encode), start-up excluded.

    The start-up (loading the avatar and checkpoint, building the renderer and detector) is timed on its own with
    a one-frame driver of the avatar's data and subtracted.  Returns (frames/s, driver frames).
    """
    import contextlib
    import io

    from talkinghead.cli import reenact_main
    from talkinghead.inference.shots import make_landmark_detector

    detector = make_landmark_detector("dlib", landmarks)
    kw = dict(progress=False, device="cpu", landmarks=landmarks, smooth=smooth, detector=detector)
    with decode_threads(threads), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        t0 = time.perf_counter()
        reenact_main(avatar, "syn0005/v01", out, synthetic_frames=1, **kw)
        start_up = time.perf_counter() - t0
        t0 = time.perf_counter()
        reenact_main(avatar, str(driver), out, **kw)
        total = time.perf_counter() - t0
    import av

    with av.open(str(out)) as c:
        n = sum(1 for _ in c.decode(video=0))
    return n / max(total - start_up, 1e-9), n


def driver_stage_rate(driver: Path, landmarks: str, threads: str | None, size: int = 64) -> float:
    """Frames/s of the driver stage of reenactment alone: decode -> landmarks -> one crop box, the landmarks in
    its ``size``² crop (the crops themselves are made only for side-by-side output)."""
    from talkinghead.inference.reenact import load_driver
    from talkinghead.inference.shots import make_landmark_detector

    detector = make_landmark_detector("dlib", landmarks)
    with decode_threads(threads):
        t0 = time.perf_counter()
        drv = load_driver(str(driver), {}, size, detector=detector, landmarks=landmarks)
    return len(drv.landmarks) / (time.perf_counter() - t0)


def serve_folder(folder: Path) -> tuple[str, Any]:
    """Serve ``folder`` over HTTP on 127.0.0.1 from a thread (remote-shard figures without a network);
    returns ``(url, server)``; ``server.shutdown()`` stops it."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/", server


def batch_bytes(shards: Path | str, image_size: int = 256, K: int = 8, batch_size: int = 8) -> tuple[int, int]:
    """Bytes of the images of one training batch as the loader sends them (uint8) and as float32 would be."""
    dm = VoxCeleb2DataModule(shards, K=K, image_size=image_size, batch_size=batch_size, num_workers=0,
                             augment=None, samples_per_video=1000)
    batch = next(iter(dm.train_dataloader()))
    sent = sum(batch[k].numel() * batch[k].element_size() for k in ("frames", "landmark_images"))
    return sent, sum(batch[k].numel() * 4 for k in ("frames", "landmark_images"))


DRIVER = REPO_ROOT.parent / "shared" / "data" / "voxmini" / "dev" / "mp4" / "id90002" / "d3" / "00001.mp4"  # 512², 120 fr.


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


# ------------------------------------------------------------------------------- the cost of irises (issue 31)
def bench_iris(args: argparse.Namespace, src: Path, detector: Any, tmp: Path, rounds: int = 3) -> None:
    """What ``ibug68+iris`` costs against ``ibug68``: preprocessing (dlib, tracked, threaded decoding) and live
    driving (``LiveSession.process`` per camera frame, one torch thread, a 32² model of each set: the difference is
    the irises, not the rendering), in alternating rounds, medians printed."""
    from talkinghead import api
    from talkinghead.inference.live import LiveSession
    from talkinghead.inference.shots import make_landmark_detector, read_user_frames
    from talkinghead.training.train import build_meta_learning

    sets = ("ibug68", "ibug68+iris")
    rates: dict[str, list[float]] = {s: [] for s in sets}
    for r in range(rounds):
        for ls in sets:
            cfg = PreprocessConfig(size=256, frames_per_video=args.frames_per_video[0], landmark_set=ls,
                                   min_face=20 if detector is not None else 80)
            with decode_threads("AUTO"):
                rep = preprocess(src, tmp / "iris", cfg, backend="dlib" if detector is None else "auto",
                                 detector=detector, workers=args.preprocess_workers, progress=False, overwrite=True)
            rates[ls].append(60 * rep.videos_read / max(rep.seconds, 1e-9))
            print(f"  round {r + 1}, preprocess {ls}: {rates[ls][-1]:.1f} videos/min ({rep.kept} kept)", flush=True)
    med = {ls: float(np.median(v)) for ls, v in rates.items()}
    print(f"iris cost, preprocess ({args.frames_per_video[0]} frames/clip): {med['ibug68']:.1f} -> "
          f"{med['ibug68+iris']:.1f} videos/min, {100 * (med['ibug68'] / med['ibug68+iris'] - 1):+.1f} % time")
    if not args.driver.is_file():
        print(f"iris cost, live: no camera clip ({args.driver})")
        return
    import torch

    frames = read_user_frames(args.driver)[0][:120]
    torch.set_num_threads(1)
    avatars = {}
    for ls in sets:
        run = tmp / f"iris_{ls}"
        cfg = compose("meta_learn", [
            "~logger", "iterations=1", f"run_dir={run}", f"model.landmarks={ls}", "K=2", "model.image_size=32",
            "model.emb_dim=32", "trainer.enable_progress_bar=false", "callbacks.val_every_n_iterations=1000",
            "callbacks.sample_every_n_iterations=1000", "data.num_identities=4", "data.test_identities=1"])
        meta_run = build_meta_learning(cfg)
        meta_run.trainer.num_sanity_val_steps = 0
        meta_run.fit()
        meta = api.load_model(run / "checkpoints" / "last.ckpt")
        made = api.make_avatar("syn0003/v00", T=2, mode="FF", meta=meta, out_dir=run / "avatar", preview_frames=0)
        avatars[ls] = (made.path, meta)
    ms: dict[str, list[float]] = {s: [] for s in sets}
    for r in range(rounds):
        for ls, (path, meta) in avatars.items():
            live = LiveSession.from_file(path, meta, make_landmark_detector("dlib", "track"))
            times = []
            for f in frames:
                t0 = time.perf_counter()
                live.process(f)
                times.append(time.perf_counter() - t0)
            ms[ls].append(1000 * float(np.median(times[5:])))
            print(f"  round {r + 1}, live {ls}: {ms[ls][-1]:.2f} ms/frame", flush=True)
    m = {ls: float(np.median(v)) for ls, v in ms.items()}
    print(f"iris cost, live ({len(frames)} frames of {args.driver.name}, 32² model, one thread): {m['ibug68']:.2f} -> "
          f"{m['ibug68+iris']:.2f} ms/frame ({m['ibug68+iris'] - m['ibug68']:+.2f} ms)")


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
    p.add_argument("--only", choices=("preprocess", "reenact", "loader", "iris"), nargs="+",
                   default=["preprocess", "reenact", "loader"],
                   help="parts to run (iris: what ibug68+iris costs against ibug68, preprocessing and live driving)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch intra-op threads while rendering (default: torch's; 1 helps on a shared, busy CPU)")
    p.add_argument("--seconds", type=float, default=15.0, help="timing window per loader setting")
    args = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    voxmini = REPO_ROOT.parent / "shared" / "data" / "voxmini"
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
    if "iris" in args.only:
        bench_iris(args, src, detector, tmp)
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
