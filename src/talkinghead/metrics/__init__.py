"""The paper's evaluation metrics as torchmetrics ``Metric``s: SSIM, FID, CSIM; ``MetricsSuite`` builds all
three.

Images are float ``(B, 3, H, W)`` in [-1, 1] everywhere.
"""
from .csim import CSIM
from .face_encoders import (
    IRSE50,
    ArcFaceEncoder,
    DlibFaceEncoder,
    FaceEncoderUnavailableError,
    MissingArcFaceWeightsError,
    make_face_encoder,
)
from .fid import FID, build_fid, try_build_fid
from .ssim import SSIM
from .suite import MetricsSuite

__all__ = [
    "CSIM",
    "FID",
    "IRSE50",
    "SSIM",
    "ArcFaceEncoder",
    "DlibFaceEncoder",
    "FaceEncoderUnavailableError",
    "MetricsSuite",
    "MissingArcFaceWeightsError",
    "build_fid",
    "make_face_encoder",
    "try_build_fid",
]
