"""Shared fixtures: synthetic VoxCeleb-layout videos (procedural heads encoded to mp4) and voxmini shards."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

#: The checkout's own folders that belong to its user: no test may read or write them.
USER_FOLDERS = ("runs", "weights", "outputs", "lightning_logs", "wandb")


# ------------------------------------------------------------------------------------------ hermetic
def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under the user's folders of the checkout, with its size and mtime."""
    out: dict[str, tuple[int, int]] = {}
    for name in USER_FOLDERS:
        for f in (root / name).rglob("*") if (root / name).is_dir() else ():
            if f.is_file():
                st = f.stat()
                out[str(f.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="session", autouse=True)
def _checkout_untouched():
    """The suite leaves the checkout's runs/, weights/ (a user's own work) exactly as it found them."""
    before = _listing(REPO)
    yield
    after = _listing(REPO)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"tests wrote into the checkout's own folders: {changed[:10]}"


@pytest.fixture(autouse=True)
def _hermetic(tmp_path_factory, monkeypatch):
    """Each test runs in an empty working folder, so relative defaults (``runs/``, ``weights/``, ``run_dir:
    runs/embedded``, ``weights/``) never find the user's runs or weights; a user's $TALKINGHEAD_WEIGHTS is
    dropped, so weights come from that empty folder's ``weights/`` unless the test points elsewhere."""
    cwd = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("TALKINGHEAD_WEIGHTS", raising=False)
    monkeypatch.delenv("TALKINGHEAD_CONFIG_DIR", raising=False)
    yield cwd


# --------------------------------------------------------------------------------------------- voxmini
def voxmini_path() -> Path | None:
    """``$TALKINGHEAD_VOXMINI`` or ``../shared/data/voxmini`` beside the repository, when present."""
    env = os.environ.get("TALKINGHEAD_VOXMINI")
    path = Path(env) if env else REPO.parent / "shared" / "data" / "voxmini"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def voxmini_dir() -> Path:
    path = voxmini_path()
    if path is None:
        pytest.skip("voxmini is absent (expected at ../shared/data/voxmini or $TALKINGHEAD_VOXMINI)")
    return path


@pytest.fixture(scope="session")
def voxmini_shards(tmp_path_factory, voxmini_dir):
    """All of voxmini preprocessed with dlib (16 frames/video, 256²). Returns ``(shard folder, Report)``."""
    from data_modules.preprocess import PreprocessConfig, preprocess

    out = tmp_path_factory.mktemp("voxmini_shards")
    cfg = PreprocessConfig(size=256, frames_per_video=16, videos_per_shard=8)
    report = preprocess(voxmini_dir, out, cfg, backend="dlib", workers=2, progress=False)
    return out, report


# ------------------------------------------------------------------------------------ synthetic videos
def synthetic_heads(num_identities: int, videos_per_identity: int, seed: int = 0):
    try:
        from data_modules.synthetic import SyntheticHeads
    except ImportError:
        from data_modules.procedural_heads import SyntheticHeads
    return SyntheticHeads(num_identities, videos_per_identity, seed=seed)


def write_mp4(path: Path, frames: np.ndarray, fps: int = 10) -> None:
    """uint8 (T, H, W, 3) RGB -> H.264 (or MPEG-4 part 2) mp4 with PyAV."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "ultrafast"}
        for f in frames:
            for pkt in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)


class OracleDetector:
    """A ``LandmarkDetector`` that knows the frames it will see: it matches a 16x16 thumbnail of each frame
    to the registered ones and returns their true landmarks (scaled to the frame), or None when none matches.

    It stands in for a detector with exact answers on synthetic video (dlib finds most procedural heads, not all,
    and its points are off by about 0.06 inter-ocular distances: docs/stages.md).
    """

    name = "oracle"

    def __init__(self, threshold: float = 200.0) -> None:
        self.thumbs: list[np.ndarray] = []
        self.points: list[np.ndarray] = []
        self.sizes: list[tuple[int, int]] = []
        self.threshold = threshold

    @staticmethod
    def _thumb(frame: np.ndarray) -> np.ndarray:
        import cv2

        return cv2.resize(frame, (16, 16), interpolation=cv2.INTER_AREA).astype(np.float32)

    def add(self, frames: np.ndarray, landmarks: np.ndarray) -> None:
        for f, p in zip(frames, landmarks):
            self.thumbs.append(self._thumb(f))
            self.points.append(np.asarray(p, dtype=np.float32))
            self.sizes.append(f.shape[:2])

    def detect(self, frames: np.ndarray) -> list[np.ndarray | None]:
        bank = np.stack(self.thumbs)
        out: list[np.ndarray | None] = []
        for f in frames:
            err = ((bank - self._thumb(f)) ** 2).mean(axis=(1, 2, 3))
            i = int(np.argmin(err))
            if err[i] > self.threshold:
                out.append(None)
                continue
            h, w = self.sizes[i]
            out.append(self.points[i] * np.array([f.shape[1] / w, f.shape[0] / h], dtype=np.float32))
        return out


def make_synthetic_vox(
    root: Path, identities: int = 4, videos: int = 2, frames: int = 16, size: int = 128, seed: int = 0
) -> OracleDetector:
    """Write ``root/id0000{i}/v{j}/00001.mp4`` heads (VoxCeleb layout); return an oracle detector for them."""
    heads = synthetic_heads(identities, videos, seed)
    oracle = OracleDetector()
    for i in range(identities):
        for j in range(videos):
            imgs, pts = zip(*(heads.render(i, j, float(t), size) for t in range(frames)))
            write_mp4(root / f"id{i + 1:05d}" / f"v{j}" / "00001.mp4", np.stack(imgs))
            oracle.add(np.stack(imgs), np.stack(pts))
    return oracle


@pytest.fixture(scope="session")
def synthetic_vox(tmp_path_factory):
    """``(source root, oracle detector)`` of 4 persons x 2 videos x 16 frames of 128² synthetic heads."""
    root = tmp_path_factory.mktemp("synthetic_vox") / "dev" / "mp4"
    oracle = make_synthetic_vox(root)
    return root, oracle


@pytest.fixture(scope="session")
def synthetic_shards(tmp_path_factory, synthetic_vox):
    """Shards of ``synthetic_vox`` (2 videos per shard, 64² crops). Returns ``(shard folder, Report)``."""
    from data_modules.preprocess import PreprocessConfig, preprocess

    src, oracle = synthetic_vox
    out = tmp_path_factory.mktemp("synthetic_shards")
    cfg = PreprocessConfig(size=64, frames_per_video=12, min_face=20, videos_per_shard=2)
    report = preprocess(src, out, cfg, detector=oracle, workers=0, progress=False)
    return out, report
