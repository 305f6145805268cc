"""Face-recognition encoders for CSIM: dlib's ResNet (offline default) and ArcFace IR-SE50 (file weights).

Both take face crops as uint8 ``(N, H, W, 3)`` RGB and return one identity embedding per image. Each finds the
face with dlib's HOG detector and its landmarks with a dlib shape predictor (the model files ship in the
``face-recognition-models`` package). Generated frames can be too poor for the detector; since every frame
of this project IS a face crop (VoxCeleb preprocessing centres the face with a margin), a frame without a
detection falls back to a box in the middle of the crop, and the encoder counts how often that happened
(``fallbacks`` of ``seen``).

* ``DlibFaceEncoder`` (``"dlib-resnet"``): ``dlib_face_recognition_resnet_model_v1.dat`` on 150x150 chips
  aligned by ``dlib.get_face_chip`` from the 5-point (or 68-point) landmarks; 128-d descriptors.
* ``ArcFaceEncoder`` (``"arcface-ir-se50"``): the IR-SE50 network of InsightFace as
  TreB1eN/InsightFace_Pytorch publishes it (``model_ir_se50.pth``), on 112x112 crops aligned to the standard
  ArcFace 5-point template (eye centres, nose tip, mouth corners taken from the 68 landmarks), fed in the
  BGR channel order it was trained on (see ``ARCFACE_CHANNEL_ORDER``); 512-d, L2-normalised.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from talkinghead.backbones.base import FrozenBackbone
from talkinghead.backbones.weights import (
    REGISTRY,
    MissingWeightsError,
    WeightSpec,
    load_state_dict_checked,
    register,
    resolve,
    weights_dir,
)
from talkinghead.visualize import to_uint8

# --------------------------------------------------------------------------------------------- model files


class FaceEncoderUnavailableError(RuntimeError):
    """A face encoder cannot run here (package or model file missing)."""


def face_models_dir() -> Path:
    """The ``models/`` folder of the ``face-recognition-models`` package (located, never imported:
    its ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceEncoderUnavailableError(
            "CSIM with dlib needs the face-recognition-models package: pip install face-recognition-models")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def face_model_file(filename: str) -> Path:
    """Path of one dlib model file of ``face-recognition-models``; a clear error when it is absent."""
    path = face_models_dir() / filename
    if not path.is_file():
        raise FaceEncoderUnavailableError(f"{path} is missing: reinstall face-recognition-models")
    return path


PREDICTOR_FILES = {5: "shape_predictor_5_face_landmarks.dat", 68: "shape_predictor_68_face_landmarks.dat"}
DLIB_RESNET_FILE = "dlib_face_recognition_resnet_model_v1.dat"

# ----------------------------------------------------------------------------------------- ArcFace weights
#: Registry name of the ArcFace IR-SE50 file. Its official copies are on OneDrive / BaiduNetdisk (links in the
#: README of TreB1eN/InsightFace_Pytorch), which cannot be fetched by a script: this entry lets ``resolve``
#: find it under ``weights/``, but ``make weights`` does not download it (it is only registered once this
#: module is imported, which the download command never does).
ARCFACE_WEIGHTS = "arcface_ir_se50"
ARCFACE_CONFIG_KEY = "metrics.arcface_weights"
ARCFACE_SPEC = WeightSpec(
    name=ARCFACE_WEIGHTS,
    url="https://1drv.ms/u/s!AhMqVPD44cDOhkPsOU2S_HFpY9dC",
    filename="model_ir_se50.pth",
    description="ArcFace IR-SE50 (TreB1eN/InsightFace_Pytorch), for CSIM; manual download only",
)
if ARCFACE_WEIGHTS not in REGISTRY:
    register(ARCFACE_SPEC)


#: The channel order ``model_ir_se50.pth`` was trained on. TreB1eN/InsightFace_Pytorch unpacks its training
#: record files with mxnet's ``recordio.unpack_img`` (OpenCV: BGR arrays) and writes them with PIL as if they
#: were RGB, so the JPEGs its ImageFolder then reads hold BGR in "RGB" order (``data/data_pipe.py``,
#: ``load_mx_rec``); its validation pairs are converted RGB -> BGR explicitly (``load_bin``), and
#: ``face_verify.py`` feeds OpenCV camera frames unconverted (the BGR -> RGB line is commented out). Input
#: range: ``ToTensor`` + ``Normalize(0.5, 0.5)``, i.e. [-1, 1] (``config.py``, ``test_transform``).
ARCFACE_CHANNEL_ORDER = "BGR"


def arcface_input(crops: np.ndarray) -> Tensor:
    """Aligned uint8 ``(N, 112, 112, 3)`` RGB crops -> float ``(N, 3, 112, 112)`` in BGR order, in [-1, 1]:
    what ``model_ir_se50.pth`` was trained on (``ARCFACE_CHANNEL_ORDER``)."""
    crops = check_uint8_batch(crops, "arcface_input")
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x.flip(1) if ARCFACE_CHANNEL_ORDER == "BGR" else x


class MissingArcFaceWeightsError(FileNotFoundError):
    """``model_ir_se50.pth`` is not on disk (it cannot be downloaded automatically)."""


def resolve_arcface_weights(
    path: str | os.PathLike[str] | None = None, directory: str | os.PathLike[str] | None = None,
    config_prefix: str = "metrics",
) -> Path:
    """The on-disk ``model_ir_se50.pth``: ``path``, else ``<weights dir>/model_ir_se50.pth``.

    Args:
        config_prefix: where the metrics config sits in the caller's stage (``metrics`` for ``make evaluate``,
            ``callbacks.metrics`` for meta-learning), for the keys the message names.

    Raises:
        MissingArcFaceWeightsError: one line saying where to get the file and which config key takes its path.
    """
    try:
        return resolve(ARCFACE_WEIGHTS, path, directory=directory)
    except MissingWeightsError:
        tried = Path(path).expanduser() if path else None
        where = tried.absolute() if tried else f"the weights directory ({_default_dir(directory)})"
        raise MissingArcFaceWeightsError(
            f"ArcFace IR-SE50 weights {ARCFACE_SPEC.filename!r} not found at {where}; `make weights` cannot "
            f"fetch them: download IR-SE50 from the OneDrive/BaiduNetdisk link in the README of "
            f"github.com/TreB1eN/InsightFace_Pytorch ({ARCFACE_SPEC.url}), then set {config_prefix}."
            f"arcface_weights=<path> or put it in the weights directory; or use {config_prefix}.csim_encoder=dlib "
            f"(works offline)"
        ) from None


def _default_dir(directory: str | os.PathLike[str] | None) -> Path:
    return weights_dir(directory).absolute()


# ------------------------------------------------------------------------------------------------- helpers


def images_to_uint8(images: Tensor) -> np.ndarray:
    """Float ``(N, 3, H, W)`` in [-1, 1] -> uint8 ``(N, H, W, 3)`` RGB (values outside are clipped)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected RGB images (N, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise TypeError(f"expected float images in [-1, 1], got dtype {images.dtype}")

    return np.ascontiguousarray(to_uint8(images))


def check_uint8_batch(images: np.ndarray, what: str) -> np.ndarray:
    """Raise ``ValueError`` unless ``images`` is uint8 ``(N, H, W, 3)``; returns it C-contiguous."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{what} takes uint8 RGB images of shape (N, H, W, 3), got {images.dtype} "
                         f"{images.shape}; convert [-1, 1] tensors with images_to_uint8")
    return np.ascontiguousarray(images)


class FaceLocator:
    """dlib HOG face box + shape-predictor landmarks, with a fallback box for frames without a detection.

    Args:
        landmarks: 5 or 68 (which ``shape_predictor_*_face_landmarks.dat`` to use).
        fallback_fraction: side of the fallback box as a fraction of the crop side, centred. Our crops are
            ``(1 + margin)`` times the landmark box (``data_modules.preprocess``, margin 0.8), so the face
            spans about 1 / 1.8 = 0.56 of the crop; 1.0 uses the whole crop.
    """

    def __init__(self, landmarks: Literal[5, 68] = 5, fallback_fraction: float = 1 / 1.8) -> None:
        if landmarks not in PREDICTOR_FILES:
            raise ValueError(f"landmarks must be 5 or 68, got {landmarks!r}")
        if not 0.0 < fallback_fraction <= 1.0:
            raise ValueError(f"fallback_fraction must lie in (0, 1], got {fallback_fraction}")
        import dlib

        self._dlib = dlib
        self.num_landmarks = int(landmarks)
        self.fallback_fraction = float(fallback_fraction)
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(face_model_file(PREDICTOR_FILES[landmarks])))
        self.seen = 0
        self.fallbacks = 0

    def box(self, image: np.ndarray) -> tuple[object, bool]:
        """The largest HOG detection of uint8 ``(H, W, 3)`` (upsampled once when the crop is small), else the
        centred fallback box; returns ``(dlib.rectangle, fell_back)``."""
        h, w = image.shape[:2]
        rects = list(self._detector(image, 0))
        if not rects and min(h, w) < 160:  # HOG's window is 80 px: look again at twice the size
            rects = list(self._detector(image, 1))
        if rects:
            return max(rects, key=lambda r: r.width() * r.height()), False
        side = self.fallback_fraction * min(h, w)
        x0, y0 = (w - side) / 2, (h - side) / 2
        return self._dlib.rectangle(round(x0), round(y0), round(x0 + side) - 1, round(y0 + side) - 1), True

    def shape(self, image: np.ndarray) -> object:
        """dlib ``full_object_detection`` of the face in uint8 ``(H, W, 3)``; counts fallbacks."""
        rect, fell_back = self.box(image)
        self.seen += 1
        self.fallbacks += int(fell_back)
        return self._predictor(image, rect)

    def landmarks(self, image: np.ndarray) -> np.ndarray:
        """``(num_landmarks, 2)`` float32 pixel ``(x, y)`` of the face in uint8 ``(H, W, 3)``."""
        s = self.shape(image)
        return np.array([[p.x, p.y] for p in s.parts()], dtype=np.float32)


@runtime_checkable
class FaceEncoder(Protocol):
    """``encode`` uint8 ``(N, H, W, 3)`` RGB -> ``(N, dim)`` float32 embeddings."""

    name: str
    dim: int
    locator: FaceLocator

    def encode(self, images: np.ndarray) -> np.ndarray: ...


# ------------------------------------------------------------------------------------------------- dlib


class DlibFaceEncoder:
    """dlib's face-recognition ResNet (29 conv layers, 128-d; LFW 99.38 %), CPU, offline.

    Args:
        landmarks: 5 (default, what dlib's own face-recognition example uses) or 68 points for alignment.
        chip_size / padding: ``dlib.get_face_chip`` parameters the network was trained with (150, 0.25).
        fallback_fraction: see ``FaceLocator``.

    Descriptors are returned as dlib gives them (not normalised; cosine similarity does not care).
    """

    name = "dlib-resnet"
    dim = 128

    def __init__(self, landmarks: Literal[5, 68] = 5, chip_size: int = 150, padding: float = 0.25,
                 fallback_fraction: float = 1 / 1.8) -> None:
        import dlib

        self.locator = FaceLocator(landmarks, fallback_fraction)
        self._net = dlib.face_recognition_model_v1(str(face_model_file(DLIB_RESNET_FILE)))
        self._dlib = dlib
        self.chip_size, self.padding = int(chip_size), float(padding)

    def chips(self, images: np.ndarray) -> list[np.ndarray]:
        """Aligned uint8 ``(chip_size, chip_size, 3)`` face chips of uint8 ``(N, H, W, 3)`` images."""
        images = check_uint8_batch(images, "DlibFaceEncoder")
        return [self._dlib.get_face_chip(img, self.locator.shape(img), self.chip_size, self.padding)
                for img in images]

    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` RGB face crops -> float32 ``(N, 128)`` descriptors."""
        chips = self.chips(images)
        if not chips:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray([np.asarray(d) for d in self._net.compute_face_descriptor(chips)], dtype=np.float32)


# ---------------------------------------------------------------------------------------------- ArcFace
#: The standard ArcFace 5-point template for 112x112 crops (x, y): left eye, right eye (in the image),
#: nose tip, left and right mouth corners.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32)
ARCFACE_INPUT_SIZE = 112


def five_points_from_68(points: np.ndarray) -> np.ndarray:
    """iBUG-68 ``(68, 2)`` -> ``(5, 2)``: centres of the eyes (36-41, 42-47), nose tip (30), mouth corners
    (48, 54), in the template's order (image-left first)."""
    points = np.asarray(points, dtype=np.float32)
    if points.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {points.shape}")
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


def align_arcface(image: np.ndarray, five: np.ndarray, size: int = ARCFACE_INPUT_SIZE) -> np.ndarray:
    """Warp uint8 ``(H, W, 3)`` by the similarity that maps ``five`` ``(5, 2)`` onto the ArcFace template
    (scaled to ``size``); returns uint8 ``(size, size, 3)``."""
    import cv2
    from skimage.transform import SimilarityTransform

    dst = ARCFACE_TEMPLATE_112 * (size / ARCFACE_INPUT_SIZE)
    src = np.asarray(five, dtype=np.float64)
    if hasattr(SimilarityTransform, "from_estimate"):
        tform = SimilarityTransform.from_estimate(src, dst)
        ok = bool(tform)
    else:  # scikit-image < 0.26
        tform = SimilarityTransform()
        ok = tform.estimate(src, dst)
    if not ok:
        raise ValueError(f"no similarity transform maps the 5 face points {src.tolist()} onto the template")
    return cv2.warpAffine(image, tform.params[:2].astype(np.float64), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


class SEModule(nn.Module):
    """Squeeze-and-excitation gate: avgpool -> 1x1 conv ``fc1`` (C -> C/r, no bias) -> ReLU -> ``fc2``
    -> sigmoid, multiplied onto the input."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        return x * gate


class BottleneckIRSE(nn.Module):
    """Improved residual unit with SE (ArcFace's "IR-SE"): BN-conv3x3-PReLU-conv3x3(stride)-BN-SE + shortcut.

    Keys: ``res_layer.{0: BN(in), 1: conv, 2: PReLU, 3: conv, 4: BN, 5: SE (fc1, fc2)}``; the shortcut is a
    1x1 strided subsampling when channels are kept (no weights), else ``shortcut_layer.{0: conv1x1, 1: BN}``.
    """

    def __init__(self, in_channels: int, depth: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.shortcut_layer: nn.Sequential | None = None
        if in_channels != depth:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, 16),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.shortcut_layer is None:  # MaxPool2d(1, stride) in the original: plain subsampling
            shortcut = x[:, :, ::self.stride, ::self.stride]
        else:
            shortcut = self.shortcut_layer(x)
        return self.res_layer(x) + shortcut


#: (in channels, depth, units) of the four stages of IR-50; the first unit of each stage has stride 2.
IR50_STAGES: tuple[tuple[int, int, int], ...] = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))


class IRSE50(FrozenBackbone):
    """ArcFace IR-SE50: 112x112 BGR in [-1, 1] ``(N, 3, 112, 112)`` -> L2-normalised ``(N, 512)``
    (``arcface_input`` makes that from RGB crops).

    State-dict keys are those of ``model_ir_se50.pth``: ``input_layer.{0: conv3x3, 1: BN, 2: PReLU}``,
    ``body.{0..23}.*`` (``BottleneckIRSE``), ``output_layer.{0: BN2d(512), 3: Linear(25088, 512),
    4: BN1d(512)}`` (indices 1, 2 are dropout and flatten, without weights).
    """

    def __init__(self) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units: list[nn.Module] = []
        for in_ch, depth, n in IR50_STAGES:
            units.append(BottleneckIRSE(in_ch, depth, 2))
            units += [BottleneckIRSE(depth, depth, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(0.6), nn.Flatten(), nn.Linear(512 * 7 * 7, 512),
            nn.BatchNorm1d(512))

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> IRSE50:
        """Build, load ``model_ir_se50.pth`` at ``path`` (layout-checked) and freeze."""
        net = cls()
        load_state_dict_checked(net, path, ARCFACE_WEIGHTS)
        return net.freeze()

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (ARCFACE_INPUT_SIZE, ARCFACE_INPUT_SIZE):
            raise ValueError(f"IRSE50 takes aligned BGR crops (N, 3, 112, 112), got {tuple(x.shape)}")
        out = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(out, dim=1)


class ArcFaceEncoder:
    """ArcFace IR-SE50 on 5-point-aligned 112x112 crops (the 5 points from dlib's 68 landmarks).

    Args:
        weights_path: ``model_ir_se50.pth`` (None: look in the weights directory).
        weights_dir: the weights directory (None: ``$TALKINGHEAD_WEIGHTS`` or ``weights/``).
        device: where the network runs.
        batch_size: crops per forward pass.
        fallback_fraction: see ``FaceLocator``.
        config_prefix: see ``resolve_arcface_weights``.

    Raises:
        MissingArcFaceWeightsError: the file is absent (the message says where to get it).
    """

    name = "arcface-ir-se50"
    dim = 512

    def __init__(self, weights_path: str | os.PathLike[str] | None = None,
                 weights_dir: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 32, fallback_fraction: float = 1 / 1.8,
                 config_prefix: str = "metrics") -> None:
        path = resolve_arcface_weights(weights_path, weights_dir, config_prefix)
        self.net = IRSE50.from_file(path).to(device)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.locator = FaceLocator(68, fallback_fraction)

    def align(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` -> aligned uint8 ``(N, 112, 112, 3)``."""
        images = check_uint8_batch(images, "ArcFaceEncoder")
        if len(images) == 0:
            return np.zeros((0, ARCFACE_INPUT_SIZE, ARCFACE_INPUT_SIZE, 3), np.uint8)
        return np.stack([align_arcface(img, five_points_from_68(self.locator.landmarks(img)))
                         for img in images])

    @torch.no_grad()
    def encode(self, images: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, 3)`` RGB face crops -> float32 ``(N, 512)`` unit-norm embeddings (the aligned
        crops enter the network in BGR order, see ``ARCFACE_CHANNEL_ORDER``)."""
        crops = self.align(images)
        out = []
        for i in range(0, len(crops), self.batch_size):
            x = arcface_input(crops[i:i + self.batch_size]).to(self.device)
            out.append(self.net(x).float().cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.dim), dtype=np.float32)


def make_face_encoder(
    kind: str = "dlib",
    arcface_weights: str | os.PathLike[str] | None = None,
    weights_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    config_prefix: str = "metrics",
) -> FaceEncoder:
    """``"dlib"`` -> ``DlibFaceEncoder``; ``"arcface"`` -> ``ArcFaceEncoder`` (its file must exist).

    ``config_prefix``: the metrics config's place in the caller's stage, for the keys error messages name.
    """
    if kind == "dlib":
        return DlibFaceEncoder()
    if kind == "arcface":
        return ArcFaceEncoder(arcface_weights, weights_dir, device=device, config_prefix=config_prefix)
    raise ValueError(f"{config_prefix}.csim_encoder must be 'dlib' or 'arcface', got {kind!r}")
