"""Face detection + iBUG-68 landmark backends behind one interface.

A ``LandmarkDetector`` maps a batch of RGB frames to one ``(68, 2)`` array of pixel ``(x, y)`` points per
frame (the largest face), or ``None`` where no face is found.

Backends:

* ``face-alignment`` (``FaceAlignmentDetector``): the FAN network the paper used (Bulat & Tzimiropoulos
  2017) with the S3FD detector; batched, runs on GPU. It fetches its weights into torch hub's cache
  (``torch.hub.get_dir()/checkpoints``) on first use, so it needs network access once.
* ``dlib`` (``DlibDetector``): HOG frontal-face detector + the 68-point shape predictor whose weights ship
  in the ``face-recognition-models`` package; CPU only, works offline.

``make_detector("auto")`` picks face-alignment when its weights are already cached and falls back to dlib,
saying so in one line on stderr.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

NUM_LANDMARKS = 68
BACKENDS = ("auto", "dlib", "face-alignment")


class DetectorUnavailableError(RuntimeError):
    """A landmark backend cannot run here (package missing, weights not fetchable)."""


@runtime_checkable
class LandmarkDetector(Protocol):
    """Detect the largest face of each frame and return its 68 landmarks."""

    name: str

    def detect(self, frames: np.ndarray) -> list[np.ndarray | None]:
        """``frames`` uint8 ``(N, H, W, 3)`` RGB -> N entries: float32 ``(68, 2)`` pixel xy, or None."""
        ...


def _largest(faces: list[np.ndarray]) -> np.ndarray | None:
    """Of several ``(68, 2)`` point sets pick the one with the largest bounding box area."""
    if not faces:
        return None
    areas = [np.ptp(f[:, 0]) * np.ptp(f[:, 1]) for f in faces]
    return np.asarray(faces[int(np.argmax(areas))], dtype=np.float32)


# ------------------------------------------------------------------------------------------------------- dlib
def dlib_predictor_path() -> Path:
    """Path of ``shape_predictor_68_face_landmarks.dat`` inside the ``face-recognition-models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DetectorUnavailableError(
            "the dlib backend needs the face-recognition-models package: pip install face-recognition-models"
        )
    path = Path(spec.submodule_search_locations[0]) / "models" / "shape_predictor_68_face_landmarks.dat"
    if not path.is_file():
        raise DetectorUnavailableError(f"{path} is missing: reinstall face-recognition-models")
    return path


class DlibDetector:
    """dlib HOG face detector + 68-point shape predictor (CPU, offline).

    ``upsample``: how many times the detector doubles the image before searching (HOG finds faces of about
    80 px and up; one upsampling finds ~40 px faces at 4x the cost; it is only tried on frames where the plain
    search finds nothing). ``max_side``: frames are shrunk so that their
    long side is at most this before detection (speed); landmarks are predicted on the full-resolution frame.
    """

    name = "dlib"

    def __init__(self, upsample: int = 1, max_side: int = 640) -> None:
        try:
            import dlib
        except ImportError as e:  # pragma: no cover - dlib-bin is a dependency
            raise DetectorUnavailableError("the dlib backend needs dlib: pip install dlib-bin") from e
        self._dlib = dlib
        self.upsample = int(upsample)
        self.max_side = int(max_side)
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(dlib_predictor_path()))

    def detect(self, frames: np.ndarray) -> list[np.ndarray | None]:
        return [_largest([pts for _, pts in faces]) for faces in self.faces(frames)]

    def faces(self, frames: np.ndarray) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Every face of each frame: ``(box float (4,) x0 y0 x1 y1, points float32 (68, 2))`` (for tracking)."""
        import cv2

        out: list[list[tuple[np.ndarray, np.ndarray]]] = []
        for frame in frames:
            frame = np.ascontiguousarray(frame)
            h, w = frame.shape[:2]
            scale = min(1.0, self.max_side / max(h, w))
            small = (
                cv2.resize(frame, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
                if scale < 1.0
                else frame
            )
            rects = self._detector(small, 0)
            if len(rects) == 0 and self.upsample > 0:  # small faces: search again on an upsampled frame
                rects = self._detector(small, self.upsample)
            faces = []
            for r in rects:
                r = self._dlib.rectangle(
                    int(r.left() / scale),
                    int(r.top() / scale),
                    int(r.right() / scale),
                    int(r.bottom() / scale),
                )
                shape = self._predictor(frame, r)
                pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
                faces.append((np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64), pts))
            out.append(faces)
        return out

    def fit(self, frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, None]:
        """The shape predictor alone inside ``box`` (x0 y0 x1 y1): (68, 2) points; dlib gives no confidence."""
        x0, y0, x1, y1 = (int(round(v)) for v in box[:4])
        # the predictor reads pixels near the box only: hand it that region (a third less time, same points)
        m = max(x1 - x0, y1 - y0) // 2
        ox, oy = max(0, x0 - m), max(0, y0 - m)
        region = np.ascontiguousarray(frame[oy : max(oy, y1 + m), ox : max(ox, x1 + m)])
        if region.size == 0:
            region, ox, oy = np.ascontiguousarray(frame), 0, 0
        shape = self._predictor(region, self._dlib.rectangle(x0 - ox, y0 - oy, x1 - ox, y1 - oy))
        pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)
        pts += np.array([ox, oy], dtype=np.float32)
        return pts, None


# --------------------------------------------------------------------------------------------- face-alignment
def face_alignment_weight_files() -> list[Path]:
    """Where face-alignment keeps the weights it needs for 2-D landmarks with S3FD (in torch hub's cache)."""
    import torch.hub

    try:
        from face_alignment.api import models_urls as fan_urls
        from face_alignment.detection.sfd.sfd_detector import models_urls as sfd_urls

        urls = [fan_urls["2DFAN-4"], sfd_urls["s3fd"]]
    except (ImportError, KeyError):  # layout of another face-alignment version: the 1.4/1.5 names
        urls = [
            "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
            "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
        ]
    ckpt = Path(torch.hub.get_dir()) / "checkpoints"
    return [ckpt / os.path.basename(u.split("?")[0]) for u in urls]


def face_alignment_status() -> tuple[bool, str]:
    """``(usable, reason)``: whether face-alignment is installed and its weights are cached locally."""
    if importlib.util.find_spec("face_alignment") is None:
        return False, "face-alignment is not installed (pip install 'talkinghead[face-alignment]')"
    missing = [p for p in face_alignment_weight_files() if not p.is_file()]
    if missing:
        return False, f"face-alignment weights are not cached ({', '.join(str(p) for p in missing)} missing)"
    return True, "face-alignment weights cached"


class FaceAlignmentDetector:
    """FAN 2-D landmarks with the S3FD detector (``face_alignment`` package), batched.

    ``device``: ``"cuda"``, ``"cpu"`` or ``None`` (cuda when available). ``batch_size``: frames per forward
    pass. Raises ``DetectorUnavailableError`` naming the dlib backend when the weights cannot be had
    (offline).
    """

    name = "face-alignment"

    def __init__(self, device: str | None = None, batch_size: int = 16, _model: object | None = None) -> None:
        import torch

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.batch_size = int(batch_size)
        if _model is not None:  # an already built FaceAlignment-like object (tests, reuse)
            self._fa = _model
            return
        try:
            import face_alignment
        except ImportError as e:
            raise DetectorUnavailableError(
                "face-alignment is not installed (pip install 'talkinghead[face-alignment]'); "
                "use --backend dlib, which works offline"
            ) from e
        try:
            self._fa = face_alignment.FaceAlignment(
                face_alignment.LandmarksType.TWO_D, device=self.device, flip_input=False, compile=False
            )
        except (OSError, RuntimeError, ValueError) as e:  # URLError is an OSError
            files = ", ".join(str(p) for p in face_alignment_weight_files())
            raise DetectorUnavailableError(
                f"face-alignment could not load its weights ({type(e).__name__}: {e}); "
                f"it downloads them on first use into {files}: run once with network access, "
                "or use --backend dlib, which works offline"
            ) from e

    def detect(self, frames: np.ndarray) -> list[np.ndarray | None]:
        import torch

        out: list[np.ndarray | None] = []
        for start in range(0, len(frames), self.batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(frames[start : start + self.batch_size]))
            batch = chunk.permute(0, 3, 1, 2).to(self.device).float()
            preds = self._fa.get_landmarks_from_batch(batch)
            if preds is None:  # no face in the whole chunk
                preds = [None] * len(chunk)
            for pts in preds:
                if pts is None or len(pts) == 0:
                    out.append(None)
                    continue
                pts = np.asarray(pts, dtype=np.float32).reshape(-1, NUM_LANDMARKS, pts.shape[-1])[..., :2]
                out.append(_largest(list(pts)))
        return out


    def faces(self, frames: np.ndarray) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Every face of each frame, S3FD run over the frames in batches: ``(box (4,), points (68, 2))``."""
        import torch

        out: list[list[tuple[np.ndarray, np.ndarray]]] = []
        for start in range(0, len(frames), self.batch_size):
            chunk = np.ascontiguousarray(frames[start : start + self.batch_size])
            batch = torch.from_numpy(chunk).permute(0, 3, 1, 2).to(self.device).float()
            boxes = self._fa.face_detector.detect_from_batch(batch)
            for frame, fboxes in zip(chunk, boxes):
                fboxes = [np.asarray(b, dtype=np.float64) for b in fboxes]
                if not fboxes:
                    out.append([])
                    continue
                pts = self._fa.get_landmarks_from_image(frame, detected_faces=fboxes)
                out.append([(b[:4], np.asarray(p, dtype=np.float32)[:, :2]) for b, p in zip(fboxes, pts or [])])
        return out

    def fit(self, frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float]:
        """FAN on the crop of ``box`` (x0 y0 x1 y1) alone: (68, 2) points and their mean heatmap peak."""
        pts, scores, _ = self._fa.get_landmarks_from_image(
            np.ascontiguousarray(frame), detected_faces=[np.asarray(box[:4], dtype=np.float64)],
            return_landmark_score=True,
        )
        return np.asarray(pts[0], dtype=np.float32)[:, :2], float(np.mean(scores[0]))


# ----------------------------------------------------------------------------------------------------- choose
def make_detector(backend: str = "auto", device: str | None = None, quiet: bool = False, **kwargs
                  ) -> LandmarkDetector:
    """Build a backend by name: ``"dlib"``, ``"face-alignment"`` or ``"auto"``.

    ``auto`` uses face-alignment when it is installed and its weights are in the local cache (no download is
    attempted), else dlib, printing one line on stderr that says which and why (``quiet``: not printed, for a caller
    that reports the detector's ``name`` itself, as ``make evaluate``'s tables do).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown landmark backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "dlib":
        return DlibDetector(**kwargs)
    if backend == "face-alignment":
        return FaceAlignmentDetector(device=device, **kwargs)
    usable, reason = face_alignment_status()
    if usable:
        try:
            return FaceAlignmentDetector(device=device)
        except DetectorUnavailableError as e:
            reason = str(e)
    if not quiet:
        print(f"landmarks: using dlib (offline HOG + 68-point predictor) because {reason}", file=sys.stderr)
    return DlibDetector(**kwargs)
