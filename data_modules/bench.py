"""Data throughput measurements shared by ``make bench`` and ``make bench-data``.

Preprocessing videos/min (``preprocess_rate``) on a VoxCeleb-layout tree, and training-loader samples/s
(``loader_rate``) on shards.  Where no real videos are at hand, ``synthetic_source`` writes procedural heads as
VoxCeleb-layout mp4 files with a stand-in detector that returns their true landmarks (labelled as such).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from data_modules.preprocess import PreprocessConfig, Report as PreprocessReport, preprocess
from data_modules.voxceleb import VoxCeleb2DataModule

VOX2_CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "data" / "vox2.yaml"


def vox2_augment() -> dict[str, Any]:
    """The augmentation of experiments/data/vox2.yaml (what training uses)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(VOX2_CONFIG).augment)


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
    from talkinghead.avatar import load_meta_learned, save_avatar
    from talkinghead.config import compose
    from talkinghead.fewshot import fit_avatar as make_avatar
    from talkinghead.shots import evenly, resolve
    from talkinghead.train import build_meta_learning

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
    from talkinghead.shots import make_landmark_detector

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
    from talkinghead.reenact import load_driver
    from talkinghead.shots import make_landmark_detector

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
