"""Track a face through a clip: detect on key frames, predict the 68 points from the previous frame's box between.

Detecting a face from scratch (dlib's HOG search, face-alignment's S3FD) costs far more than fitting the 68 points
inside a known box (dlib's shape predictor, FAN on one crop).  ``FaceTracker`` wraps a detector backend and, for a
sequence of frames of ONE clip (consecutive, or evenly sampled as preprocessing does):

1. **Key frames** are detected: the first frame, every ``key_interval``-th frame, and every frame that starts a new
   shot (a scene cut: the 32x32 grey thumbnail of the whole frame changes by more than ``cut_threshold`` grey
   levels on average).  Scheduled key frames are detected in one call, so face-alignment runs S3FD in batches.
2. **Between key frames** the box of the previous frame's landmarks, placed relative to them as the detector placed
   its box at the last detection, is handed to the backend's landmark fitter (dlib shape predictor / FAN)
   (``refits`` > 1 refits from the box of the previous fit's landmarks).
3. **Failure/drift test** on every tracked frame; any failure makes the frame a key frame and it is re-detected:

   * ``jump``: the new landmarks' box overlaps the previous one by IoU < ``min_iou`` (the fit ran off the face),
   * ``appearance``: the grey 24x24 patch under the new box correlates (NCC) with the previous frame's patch by
     less than ``min_ncc`` (the face was replaced: a cut, an occluder, the face left the frame),
   * ``edge``: more than ``max_outside`` of the box lies outside the frame (the face is leaving),
   * ``score``: the fitter's own confidence (face-alignment heatmap peaks) is below ``min_score``.

On a key frame with several faces the tracker keeps the face that overlaps the face it was tracking (IoU >= 0.3),
so it does not jump to another person; after a cut, a lost track or on the first frame it takes the largest face,
as per-frame detection does.  A key frame where the detector finds no face gives ``None`` (as detection does), and
the tracker re-detects every following frame until it finds one again.

Backends that cannot fit a box (test stand-ins, custom detectors) are detected on every frame: tracking is then
exactly per-frame detection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

LANDMARK_MODES = ("track", "detect")


class TrackableBackend(Protocol):
    """What a detector offers for tracking (``DlibDetector`` and ``FaceAlignmentDetector`` have both)."""

    name: str

    def faces(self, frames: np.ndarray) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """uint8 (N, H, W, 3) -> per frame, every face found: (box float (4,) x0 y0 x1 y1, points (68, 2))."""
        ...

    def fit(self, frame: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, float | None]:
        """Landmarks (68, 2) of the face inside ``box`` (x0 y0 x1 y1) of one frame, and a confidence or None."""
        ...


def can_track(detector: Any) -> bool:
    """Whether ``detector`` offers :class:`TrackableBackend`'s two methods (list faces, fit points in a box)."""
    return callable(getattr(detector, "faces", None)) and callable(getattr(detector, "fit", None))


# ------------------------------------------------------------------------------------------------ geometry
def landmark_box(points: np.ndarray) -> np.ndarray:
    """(68, 2) -> float64 (4,) x0 y0 x1 y1 of the points."""
    p = np.asarray(points, dtype=np.float64)
    return np.array([p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x0 y0 x1 y1 boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _centre_scale(box: np.ndarray) -> tuple[np.ndarray, float]:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]), float(
        np.sqrt(max(box[2] - box[0], 1e-6) * max(box[3] - box[1], 1e-6))
    )


def box_relation(detector_box: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Where the detector put its box relative to the landmarks' box: (4,) offsets in landmark-box units."""
    c, s = _centre_scale(landmark_box(points))
    return (np.asarray(detector_box[:4], dtype=np.float64) - np.tile(c, 2)) / s


def detector_box(points: np.ndarray, relation: np.ndarray) -> np.ndarray:
    """The box the detector would give for a face with these landmarks (inverse of ``box_relation``)."""
    c, s = _centre_scale(landmark_box(points))
    return np.tile(c, 2) + relation * s


def outside_fraction(box: np.ndarray, height: int, width: int) -> float:
    """Share of the box's area outside a ``height`` x ``width`` frame."""
    area = max(box[2] - box[0], 1e-6) * max(box[3] - box[1], 1e-6)
    iw = max(0.0, min(box[2], width) - max(box[0], 0.0))
    ih = max(0.0, min(box[3], height) - max(box[1], 0.0))
    return float(1.0 - iw * ih / area)


def _grey(frame: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def _strided(image: np.ndarray, side: int) -> np.ndarray:
    """Every k-th pixel, k such that the result keeps at least 2 * ``side`` pixels a side (cheap pre-shrinking)."""
    k = max(1, min(image.shape[:2]) // (2 * side))
    return image[::k, ::k]


def thumbnail(frame: np.ndarray, side: int = 32) -> np.ndarray:
    import cv2

    return cv2.resize(_grey(_strided(frame, side)), (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)


def face_patch(frame: np.ndarray, box: np.ndarray, side: int = 24) -> np.ndarray | None:
    """Grey ``side`` x ``side`` patch under ``box`` (clipped to the frame), zero mean and unit norm; None if empty."""
    import cv2

    h, w = frame.shape[:2]
    x0, y0 = int(max(0, np.floor(box[0]))), int(max(0, np.floor(box[1])))
    x1, y1 = int(min(w, np.ceil(box[2]))), int(min(h, np.ceil(box[3])))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    patch = cv2.resize(_grey(_strided(frame[y0:y1, x0:x1], side)), (side, side), interpolation=cv2.INTER_AREA)
    patch = patch.astype(np.float32)
    patch -= patch.mean()
    norm = float(np.linalg.norm(patch))
    return patch / norm if norm > 1e-6 else None


def scene_cuts(frames: np.ndarray, threshold: float) -> np.ndarray:
    """bool (N,): frame i starts a new shot (mean absolute grey change of the 32x32 thumbnail > threshold)."""
    cuts = np.zeros(len(frames), dtype=bool)
    prev = None
    for i, f in enumerate(frames):
        t = thumbnail(f)
        if prev is not None and float(np.abs(t - prev).mean()) > threshold:
            cuts[i] = True
        prev = t
    return cuts


# ------------------------------------------------------------------------------------------------ tracker
@dataclass
class TrackStats:
    """What the last ``track`` call did: frames detected (and why), frames tracked."""

    frames: int = 0
    detected: int = 0
    tracked: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    key: list[int] = field(default_factory=list)  # indices of the frames that were detected

    def add(self, reason: str) -> None:
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


class FaceTracker:
    """A ``LandmarkDetector`` for the frames of one clip that detects on key frames and tracks in between.

    ``detector``: a ``DlibDetector``/``FaceAlignmentDetector`` (or anything with ``faces`` and ``fit``; other
    detectors are run on every frame).  Each ``detect(frames)`` call is one clip: nothing is carried from one call
    to the next.  See the module docstring for the key-frame schedule and the failure tests; ``stats`` tells what
    the last call did.
    """

    def __init__(
        self,
        detector: Any,
        key_interval: int = 32,
        cut_threshold: float = 20.0,
        min_iou: float = 0.5,
        min_ncc: float = 0.6,
        max_outside: float = 0.25,
        min_score: float = 0.2,
        refits: int = 1,
    ) -> None:
        if key_interval < 1:
            raise ValueError(f"key_interval must be >= 1, got {key_interval}")
        self.detector = detector
        self.name = f"{getattr(detector, 'name', type(detector).__name__)}+track"
        self.key_interval = int(key_interval)
        self.cut_threshold = float(cut_threshold)
        self.min_iou, self.min_ncc = float(min_iou), float(min_ncc)
        self.max_outside, self.min_score = float(max_outside), float(min_score)
        self.refits = max(1, int(refits))
        self.stats = TrackStats()

    # the LandmarkDetector interface ------------------------------------------------------------------------
    def detect(self, frames: np.ndarray) -> list[np.ndarray | None]:
        """uint8 (N, H, W, 3) frames of one clip, in order -> N entries: float32 (68, 2) pixel xy, or None."""
        if not can_track(self.detector):
            out = self.detector.detect(frames)
            self.stats = TrackStats(len(frames), len(frames), 0, {"untrackable backend": len(frames)},
                                    list(range(len(frames))))
            return out
        return self.track(frames)

    def track(self, frames: np.ndarray) -> list[np.ndarray | None]:
        n = len(frames)
        stats = TrackStats(frames=n)
        self.stats = stats
        if n == 0:
            return []
        cuts = scene_cuts(frames, self.cut_threshold)
        scheduled = sorted({0, *range(0, n, self.key_interval), *np.flatnonzero(cuts).tolist()})
        pre = dict(zip(scheduled, self.detector.faces(frames[scheduled])))  # one (batched) call
        state = _TrackState(self, stats)
        return [
            state.step(frames[i], bool(cuts[i]), i in pre,
                       lambda i=i: pre[i] if i in pre else self.detector.faces(frames[i : i + 1])[0])
            for i in range(n)
        ]

    def online(self) -> OnlineTracker:
        """A tracker for a live stream: one frame at a time (:class:`OnlineTracker`)."""
        return OnlineTracker(self)


class _TrackState:
    """What tracking carries from one frame to the next (the previous landmarks, face patch and detector-box
    relation); :meth:`step` is one frame of the schedule in the module docstring, for a clip or a live stream."""

    def __init__(self, tracker: FaceTracker, stats: TrackStats) -> None:
        self.t, self.stats = tracker, stats
        self.frames = 0
        self.prev_pts: np.ndarray | None = None
        self.prev_patch: np.ndarray | None = None
        self.relation: np.ndarray | None = None

    def _choose(
        self, faces: list[tuple[np.ndarray, np.ndarray]], fresh: bool
    ) -> tuple[np.ndarray, np.ndarray] | None:
        if not faces:
            return None
        if not fresh and self.prev_pts is not None:  # keep following the same face
            pb = landmark_box(self.prev_pts)
            overlaps = [iou(landmark_box(p), pb) for _, p in faces]
            best = int(np.argmax(overlaps))
            if overlaps[best] >= 0.3:
                return faces[best]
        areas = [np.ptp(p[:, 0]) * np.ptp(p[:, 1]) for _, p in faces]  # largest, as detection does
        return faces[int(np.argmax(areas))]

    def step(
        self, frame: np.ndarray, cut: bool, key: bool, faces: Any
    ) -> np.ndarray | None:
        """uint8 (H, W, 3) frame -> float32 (68, 2) landmarks or None; ``cut``: it starts a new shot; ``key``: a
        scheduled key frame; ``faces()``: the detector's faces of this frame (called only when it is detected)."""
        t, stats = self.t, self.stats
        first = self.frames == 0
        self.frames += 1
        h, w = frame.shape[:2]
        reason = None
        if self.prev_pts is None:
            reason = "first frame" if first else ("cut" if cut else "no face before")
        elif cut:
            reason = "cut"
        elif key:
            reason = "key frame"
        if reason is None:  # track: fit inside the box the previous landmarks give
            pts, score = self.prev_pts, None
            for _ in range(t.refits):
                pts, score = t.detector.fit(frame, detector_box(pts, self.relation))
            box = landmark_box(pts)
            patch = face_patch(frame, box)
            if score is not None and score < t.min_score:
                reason = "score"
            elif iou(box, landmark_box(self.prev_pts)) < t.min_iou:
                reason = "jump"
            elif outside_fraction(box, h, w) > t.max_outside:
                reason = "edge"
            elif patch is None or self.prev_patch is None or float((patch * self.prev_patch).sum()) < t.min_ncc:
                reason = "appearance"
            else:
                stats.tracked += 1
                self.prev_pts, self.prev_patch = pts, patch
                return pts.astype(np.float32)
        stats.add(reason)
        stats.detected += 1
        stats.key.append(self.frames - 1)
        face = self._choose(faces(), reason in ("first frame", "cut", "no face before", "appearance"))
        if face is None:
            self.prev_pts = self.prev_patch = None
            return None
        dbox, pts = face
        self.relation = box_relation(dbox, pts)
        self.prev_pts = pts
        self.prev_patch = face_patch(frame, landmark_box(pts))
        return pts.astype(np.float32)


class OnlineTracker:
    """:class:`FaceTracker` for a live stream: ``step(frame)`` per frame, in order, carrying the track from one
    call to the next (key frames every ``key_interval`` frames and on scene cuts, as for a clip).  A backend that
    cannot fit a box is detected on every frame.  ``stats`` counts what was done since the start."""

    def __init__(self, tracker: FaceTracker) -> None:
        self.tracker = tracker
        self.stats = TrackStats()
        self._state = _TrackState(tracker, self.stats)
        self._thumb: np.ndarray | None = None

    def step(self, frame: np.ndarray) -> np.ndarray | None:
        """uint8 (H, W, 3) RGB -> float32 (68, 2) pixel xy of the tracked face, or None."""
        det = self.tracker.detector
        self.stats.frames += 1
        if not can_track(det):
            self.stats.detected += 1
            return det.detect(frame[None])[0]
        thumb = thumbnail(frame)
        cut = self._thumb is not None and float(np.abs(thumb - self._thumb).mean()) > self.tracker.cut_threshold
        self._thumb = thumb
        key = (self.stats.frames - 1) % self.tracker.key_interval == 0
        return self._state.step(frame, cut, key, lambda: det.faces(frame[None])[0])


def online_tracker(detector: Any, mode: str = "track", **kwargs: Any) -> OnlineTracker:
    """A frame-by-frame tracker over ``detector`` (a backend, a ``FaceTracker``, or any ``LandmarkDetector``):
    ``mode="detect"`` or a backend that cannot fit a box detects every frame."""
    if mode not in LANDMARK_MODES:
        raise ValueError(f"landmarks mode must be one of {', '.join(LANDMARK_MODES)}, got {mode!r}")
    if isinstance(detector, FaceTracker):
        return detector.online()
    return FaceTracker(detector if mode == "track" else _Untrackable(detector), **kwargs).online()


class _Untrackable:
    """``detector`` without its box fitter: detected on every frame."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        self.name = getattr(detector, "name", type(detector).__name__)

    def detect(self, frames: np.ndarray) -> list[np.ndarray | None]:
        return self.detector.detect(frames)


def make_landmarker(detector: Any, mode: str = "track", **kwargs: Any) -> Any:
    """``detector`` itself for ``mode="detect"`` (per-frame detection), a ``FaceTracker`` over it for ``"track"``."""
    if mode not in LANDMARK_MODES:
        raise ValueError(f"landmarks mode must be one of {', '.join(LANDMARK_MODES)}, got {mode!r}")
    if mode == "detect" or isinstance(detector, FaceTracker) or not can_track(detector):
        return detector  # a backend that cannot fit a box is detected on every frame, under its own name
    return FaceTracker(detector, **kwargs)
