"""SSIM / FID / CSIM metrics, their weight loading, and the metrics callback."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from _published_weights import write_published
from helpers import FixedEpisodes, tiny_module
from pytorch_lightning.loggers import Logger
from torch.utils.data import DataLoader

from talkinghead.backbones.weights import MissingWeightsError, WeightLayoutError
from talkinghead.callbacks.metrics import MetricsCallback
from talkinghead.metrics import (
    CSIM,
    FID,
    IRSE50,
    SSIM,
    ArcFaceEncoder,
    DlibFaceEncoder,
    MetricsSuite,
    MissingArcFaceWeightsError,
    build_fid,
    try_build_fid,
)
from talkinghead.metrics.face_encoders import (
    ARCFACE_TEMPLATE_112,
    align_arcface,
    arcface_input,
    five_points_from_68,
)

VOX_VIDEO = Path("dev/mp4/id90001/d0/00001.mp4")


# ------------------------------------------------------------------------------------------------ images
def face_crop(image: np.ndarray, encoder: DlibFaceEncoder, size: int = 256,
              margin: float = 0.8) -> np.ndarray:
    """A VoxCeleb-style crop: square, (1 + margin) x the detected face box, centred on it, resized."""
    import cv2

    rect, fell_back = encoder.locator.box(image)
    assert not fell_back, "test image without a detectable face"
    cx, cy = (rect.left() + rect.right()) / 2, (rect.top() + rect.bottom()) / 2
    side = int(max(rect.width(), rect.height()) * (1 + margin))
    padded = np.pad(image, ((side, side), (side, side), (0, 0)))
    x0, y0 = int(cx - side / 2) + side, int(cy - side / 2) + side
    return cv2.resize(padded[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def video_frames(path: Path, indices: list[int]) -> list[np.ndarray]:
    import av

    out = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in indices:
                out.append(frame.to_ndarray(format="rgb24"))
            if i >= max(indices):
                break
    return out


class TinyFeatures(torch.nn.Module):
    """A stand-in FID feature network with 8 features (the 2048-d Inception statistics take seconds per
    compute on a CPU; FID through the real Inception is tested above)."""

    num_features = 8

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(12, 8)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.nn.functional.adaptive_avg_pool2d(images, 2).flatten(1))


@pytest.fixture(scope="module")
def dlib_encoder() -> DlibFaceEncoder:
    return DlibFaceEncoder()


@pytest.fixture(scope="module")
def astronaut(dlib_encoder: DlibFaceEncoder) -> np.ndarray:
    from skimage.data import astronaut as load

    return face_crop(load(), dlib_encoder)


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random InceptionV3 weights in the published pytorch-fid layout (no num_batches_tracked, as in 2018)."""
    return write_published("inception_fid", tmp_path_factory.mktemp("fid_weights"))


# -------------------------------------------------------------------------------------------------- CSIM
def test_csim_dlib_of_identical_images_is_one(dlib_encoder: DlibFaceEncoder, astronaut: np.ndarray) -> None:
    x = to_tensor(np.stack([astronaut, astronaut[:, ::-1]]))
    metric = CSIM(dlib_encoder)
    metric.update(x, x.clone())
    assert metric.encoder_name == "dlib-resnet"
    assert abs(float(metric.compute()) - 1.0) < 1e-5
    assert int(metric.count) == 2


def test_csim_dlib_separates_two_real_people(dlib_encoder: DlibFaceEncoder, astronaut: np.ndarray,
                                             voxmini_dir: Path) -> None:
    first, later = (face_crop(f, dlib_encoder) for f in video_frames(voxmini_dir / VOX_VIDEO, [0, 60]))
    t0 = time.perf_counter()
    emb = dlib_encoder.encode(np.stack([astronaut, first, later]))
    ms = (time.perf_counter() - t0) / 3 * 1000
    assert emb.shape == (3, 128) and np.isfinite(emb).all()

    different = CSIM(dlib_encoder)
    different.update(to_tensor(astronaut[None]), to_tensor(first[None]))
    same = CSIM(dlib_encoder)
    same.update(to_tensor(later[None]), to_tensor(first[None]))
    d, s = float(different.compute()), float(same.compute())
    print(f"CSIM(dlib) astronaut vs voxmini id90001: {d:.4f}; id90001 frame 0 vs 60: {s:.4f}; "
          f"encode {ms:.0f} ms/image (256x256)")
    assert d < 0.9
    assert s > d + 0.1


def test_dlib_encoder_falls_back_to_the_crop_when_no_face_is_found(dlib_encoder: DlibFaceEncoder) -> None:
    flat = np.full((2, 64, 64, 3), 128, dtype=np.uint8)
    flat[1, 20:40, 20:40] = 30
    before = dlib_encoder.locator.fallbacks
    emb = dlib_encoder.encode(flat)
    assert emb.shape == (2, 128) and np.isfinite(emb).all()
    assert dlib_encoder.locator.fallbacks - before == 2


def test_csim_rejects_mismatched_batches(dlib_encoder: DlibFaceEncoder) -> None:
    with pytest.raises(ValueError, match="same shape"):
        CSIM(dlib_encoder).update(torch.zeros(2, 3, 64, 64), torch.zeros(1, 3, 64, 64))


# --------------------------------------------------------------------------------------------------- FID
def test_fid_of_a_set_against_itself_is_zero_through_the_real_loading_code(fid_weights: Path) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 3, 80, 80, generator=g) * 2 - 1  # 80x80 without resizing: fast on the CPU
    fid = build_fid(fid_weights, resize_input=False)
    fid.update(a, real=True)
    fid.update(a, real=False)
    same = float(fid.compute())
    n = int(fid.real_features_num_samples)
    mean = fid.real_features_sum / n
    spread = float((fid.real_features_cov_sum.trace() - n * mean.square().sum()) / (n - 1))  # tr(cov)
    print(f"FID(set, itself) = {same:.3g}; tr(cov) = {spread:.3g}")
    assert spread > 1e-2  # the random Inception features are not degenerate
    assert abs(same) < 1e-6 * spread


def test_fid_works_in_float64(fid_weights: Path) -> None:
    """torchmetrics' ``set_dtype(torch.float64)`` converts the Inception too: its input must follow."""
    g = torch.Generator().manual_seed(3)
    real, fake = torch.rand(4, 3, 80, 80, generator=g) * 2 - 1, torch.rand(4, 3, 80, 80, generator=g) * 2 - 1
    values = []
    for dtype in (torch.float32, torch.float64):
        fid = build_fid(fid_weights, resize_input=False)
        fid.set_dtype(dtype)
        assert fid.inception.Conv2d_1a_3x3.conv.weight.dtype == dtype
        fid.update(real, real=True)
        fid.update(fake, real=False)
        values.append(float(fid.compute()))
    assert values[0] > 0 and math.isfinite(values[1])
    assert values[1] == pytest.approx(values[0], rel=1e-3)


def test_frechet_distance_matches_torchmetrics_formula() -> None:
    from torchmetrics.image.fid import _compute_fid

    from talkinghead.metrics.fid import frechet_distance, frechet_distance_from_features

    g = torch.Generator().manual_seed(0)
    for n in (6, 100):  # rank-deficient and full-rank covariances of 40-d features
        a = torch.randn(n, 40, generator=g, dtype=torch.float64)
        b = 1.3 * torch.randn(n + 3, 40, generator=g, dtype=torch.float64) + 0.2
        args = (a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))
        reference = float(_compute_fid(*args))
        assert reference > 1.0
        assert float(frechet_distance(*args)) == pytest.approx(reference, rel=1e-6)
        assert float(frechet_distance_from_features(a, b)) == pytest.approx(reference, rel=1e-6)
        assert abs(float(frechet_distance(args[0], args[1], args[0], args[1]))) < 1e-9
        assert abs(float(frechet_distance_from_features(a, a))) < 1e-9


def test_fid_uses_kept_features_and_sums_alike() -> None:
    torch.manual_seed(0)
    net = TinyFeatures()
    g = torch.Generator().manual_seed(1)
    real, fake = torch.rand(2, 12, 3, 16, 16, generator=g) * 2 - 1
    values = []
    for exact_small_n in (1024, 0):  # N x N route, then the D x D route on the running sums
        fid = FID(feature=net, normalize=True, exact_small_n=exact_small_n)
        for chunk in range(0, 12, 4):
            fid.update(real[chunk:chunk + 4], real=True)
            fid.update(fake[chunk:chunk + 4], real=False)
        assert (len(fid.real_features) > 0) == (exact_small_n > 0)
        values.append(float(fid.compute()))
    assert values[0] > 1e-4 and values[0] == pytest.approx(values[1], rel=1e-4)


def test_missing_fid_weights_make_fid_unavailable_with_the_reason(tmp_path: Path) -> None:
    metric, reason = try_build_fid(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    assert metric is None and reason is not None
    assert "missing" in reason and "make weights" in reason and "metrics.fid_weights" in reason
    with pytest.raises(MissingWeightsError, match="make weights"):
        build_fid(None, weights_dir=tmp_path)

    suite = MetricsSuite({"weights_dir": str(tmp_path), "csim": False})
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    suite.update(x, x)
    results = suite.compute()
    assert results["fid"] is None and results["ssim"] == pytest.approx(1.0, abs=1e-5)
    assert "make weights" in suite.unavailable["fid"]
    assert "| FID | unavailable |" in suite.table(results)


def test_fid_weights_with_the_wrong_layout_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(WeightLayoutError, match="missing keys"):
        try_build_fid(path)


# ------------------------------------------------------------------------------------------------ ArcFace
def test_arcface_ir_se50_loads_published_layout_and_embeds(tmp_path: Path, astronaut: np.ndarray) -> None:
    torch.manual_seed(0)
    state = {k: v for k, v in IRSE50().state_dict().items() if not k.endswith("num_batches_tracked")}
    assert "body.0.res_layer.5.fc1.weight" in state and "body.3.shortcut_layer.0.weight" in state
    assert state["output_layer.3.weight"].shape == (512, 512 * 7 * 7)
    path = tmp_path / "model_ir_se50.pth"
    torch.save(state, path)

    encoder = ArcFaceEncoder(path)
    assert torch.equal(encoder.net.body[23].res_layer[5].fc2.weight, state["body.23.res_layer.5.fc2.weight"])
    images = np.stack([astronaut, astronaut[:, ::-1]])
    emb = encoder.encode(images)
    assert emb.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    metric = CSIM(encoder)
    metric.update(to_tensor(images), to_tensor(images))
    assert metric.encoder_name == "arcface-ir-se50"
    assert abs(float(metric.compute()) - 1.0) < 1e-5


def test_arcface_sees_bgr_as_treb1en_trained_it(tmp_path: Path, astronaut: np.ndarray) -> None:
    """model_ir_se50.pth was trained on BGR (TreB1eN decodes with OpenCV and never converts): the encoder must
    hand the network the aligned crop's channels reversed. Fails if RGB goes in."""
    pixel = np.zeros((1, 112, 112, 3), dtype=np.uint8)
    pixel[..., 0], pixel[..., 1], pixel[..., 2] = 255, 0, 51  # R, G, B
    x = arcface_input(pixel)
    assert x.shape == (1, 3, 112, 112)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([51 / 127.5 - 1, -1.0, 1.0]))  # B, G, R in [-1, 1]

    torch.manual_seed(1)
    state = {k: v for k, v in IRSE50().state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "model_ir_se50.pth")
    encoder = ArcFaceEncoder(tmp_path / "model_ir_se50.pth")
    crops = encoder.align(astronaut[None])
    emb = encoder.encode(astronaut[None])
    as_float = torch.from_numpy(crops.copy()).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        bgr = encoder.net(as_float.flip(1)).numpy()
        rgb = encoder.net(as_float).numpy()
    np.testing.assert_allclose(emb, bgr, atol=1e-5)
    cos_rgb = float((emb * rgb).sum())
    print(f"cosine of the BGR and RGB embeddings of one crop (random-weight replica): {cos_rgb:.3f}")
    assert cos_rgb < 0.99  # the two orders give different identities: the order matters, and is BGR


def test_arcface_alignment_puts_the_five_points_on_the_template() -> None:
    angle, scale, shift = math.radians(20), 1.7, np.array([30.0, 12.0])
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    five = ARCFACE_TEMPLATE_112 @ rot.T + shift
    image = np.zeros((256, 256, 3), dtype=np.uint8)
    for x, y in np.round(five).astype(int):
        image[y - 2:y + 3, x - 2:x + 3] = 255
    aligned = align_arcface(image, np.round(five))
    assert aligned.shape == (112, 112, 3)
    for x, y in ARCFACE_TEMPLATE_112:
        assert aligned[round(y), round(x)].min() > 100

    pts68 = np.zeros((68, 2), dtype=np.float32)
    pts68[36:42], pts68[42:48], pts68[30] = (10, 20), (50, 20), (30, 40)
    pts68[48], pts68[54] = (15, 60), (45, 60)
    np.testing.assert_allclose(five_points_from_68(pts68), [[10, 20], [50, 20], [30, 40], [15, 60], [45, 60]])


def test_missing_arcface_weights_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MissingArcFaceWeightsError, match="TreB1eN/InsightFace_Pytorch") as info:
        ArcFaceEncoder(tmp_path / "model_ir_se50.pth")
    assert "metrics.arcface_weights" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(MissingArcFaceWeightsError, match="metrics.arcface_weights"):
        MetricsSuite({"csim_encoder": "arcface", "weights_dir": str(tmp_path), "fid": False})


def test_missing_file_messages_name_the_keys_of_the_stage(tmp_path: Path) -> None:
    """Meta-learning keeps its metrics config under callbacks.metrics; make evaluate under metrics."""
    from talkinghead.config import compose

    assert "fid_weights" in compose("meta_learn").callbacks.metrics
    assert "fid_weights" in compose("evaluate").metrics
    assert MetricsCallback().config_key == "callbacks.metrics"
    suite = MetricsSuite({"weights_dir": str(tmp_path), "csim": False}, config_key="callbacks.metrics")
    assert "set callbacks.metrics.fid_weights to the file" in suite.unavailable["fid"]
    assert "set metrics.fid_weights" in MetricsSuite({"weights_dir": str(tmp_path), "csim": False}).unavailable["fid"]
    with pytest.raises(MissingArcFaceWeightsError) as info:
        MetricsSuite({"csim_encoder": "arcface", "weights_dir": str(tmp_path), "fid": False},
                     config_key="callbacks.metrics")
    msg = str(info.value)
    assert "callbacks.metrics.arcface_weights=<path>" in msg and "callbacks.metrics.csim_encoder=dlib" in msg
    assert " metrics.arcface_weights" not in msg and "\n" not in msg
    with pytest.raises(ValueError, match=r"callbacks\.metrics\.csim_encoder must be"):
        MetricsSuite({"csim_encoder": "facenet", "fid": False}, config_key="callbacks.metrics")


def test_metrics_suite_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="unknown metrics config key"):
        MetricsSuite({"fid_weight": "x"})
    with pytest.raises(ValueError, match="csim_encoder must be 'dlib' or 'arcface'"):
        MetricsSuite({"csim_encoder": "facenet", "fid": False})


# --------------------------------------------------------------------------------------------------- SSIM
def test_ssim_takes_minus_one_to_one_images() -> None:
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim_fn

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(2, 2, 3, 32, 32, generator=g) * 2 - 1
    metric = SSIM()
    metric.update(a, b)
    expected = ssim_fn((a + 1) / 2, (b + 1) / 2, data_range=1.0)
    assert float(metric.compute()) == pytest.approx(float(expected), abs=1e-6)
    metric.reset()
    metric.update(a, a)
    assert float(metric.compute()) == pytest.approx(1.0, abs=1e-6)


# ----------------------------------------------------------------------------------------------- callback
class RecordingLogger(Logger):
    """Keeps what Lightning and callbacks log, in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int | None, dict[str, float]]] = []
        self.hparams: dict[str, Any] = {}

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append((step, dict(metrics)))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(params, dict):
            self.hparams.update(params)


class EpisodesDataModule(pl.LightningDataModule):
    def __init__(self) -> None:
        super().__init__()
        self.train = FixedEpisodes(n=2, K=2, size=32, repeat=50)
        self.val = FixedEpisodes(n=2, K=2, size=32, repeat=2, seed=1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=2)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=2)


def test_metrics_callback_logs_ssim_fid_csim() -> None:
    torch.manual_seed(0)
    module = tiny_module(num_videos=2, size=32)
    logger = RecordingLogger()
    suite = MetricsSuite({"fid": False}, sync_on_compute=False)
    suite.metrics["fid"] = FID(feature=TinyFeatures(), normalize=True, sync_on_compute=False)
    callback = MetricsCallback(every_n_iterations=2, max_batches=1, suite=suite)
    trainer = pl.Trainer(
        max_steps=3 * (1 + module.d_steps_per_g), accelerator="cpu", devices=1, logger=logger,
        callbacks=[callback], enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    )
    trainer.fit(module, datamodule=EpisodesDataModule())

    assert [it for it, _ in callback.history] == [2, 3]  # every 2 iterations, and at the end
    logged = [m for _, m in logger.metrics if any(k.startswith("metrics/") for k in m)]
    assert len(logged) == 2
    for m in logged:
        assert {"metrics/ssim", "metrics/fid", "metrics/csim"} <= set(m)
        assert all(math.isfinite(v) for v in m.values())
        assert -1.0 <= m["metrics/csim"] <= 1.0 and -1.0 <= m["metrics/ssim"] <= 1.0
    assert logger.hparams["metrics/csim_encoder"] == "dlib-resnet"
    assert module.training  # evaluation gave the module back in training mode
