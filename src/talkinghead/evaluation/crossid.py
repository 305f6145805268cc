"""Reenactment measured across people: ``make evaluate``'s cross-identity protocol (``protocols=[table1,cross]``).

Table 1 scores an avatar driven by its own person's landmarks against real frames.  What a user does is drive one
person's avatar with *another* person's motion, where there is no real frame to compare with.  Here every held-out
avatar (``cross.persons`` persons, T frames each, FT or FF) is driven by the clips of every other held-out person,
once with landmark adaptation on and once off (``cross.adapt``; ``talkinghead.landmarks.adapt``), and each output
clip is scored on

* **identity** -- CSIM of each output frame to a real frame of the avatar's person (the encoder of ``metrics``);
* **pose** -- the 68 landmarks found on the output (``cross.detector``, ``talkinghead.landmarks.detectors``)
  against the *driving landmarks* (the ones the output was rendered from: the driver's, or with adaptation the
  driver's motion moved onto the avatar's face), mean point error on the rigid points (jaw corners, nose, eye
  corners: :data:`~talkinghead.landmarks.adapt.RIGID_POINTS`) over the inter-ocular distance (outer eye corners);
* **expression** -- the same on the other points (brows, eyelids, mouth, jaw line) after the best similarity
  from the found to the driving rigid points is taken out (the pose is not counted twice);
* **jitter** -- ``talkinghead.landmarks.smooth.jitter`` of the found landmarks (frame-to-frame motion left after
  the head's similarity motion) over the inter-ocular distance, beside the driving landmarks' own.

Frames where the detector finds no face are left out of pose, expression and jitter and counted; when it finds
none the three are "unavailable" (dlib does not fire on the synthetic heads of the embedded default).  With
``cross.full`` the outputs are pasted into the avatar's source frame (``talkinghead.inference.paste``) and scored on their
face crop again, as a full-frame reenactment would be.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from data_modules.persons import SYNTHETIC_VIDEO_LENGTH
from talkinghead.inference import shots as shots_mod
from talkinghead.crop import crop_frame
from talkinghead.errors import ConfigError, EvaluationError
from talkinghead.inference.fewshot import fit_avatar
from talkinghead.landmarks.adapt import RIGID_POINTS, fit_similarity
from talkinghead.landmarks.detectors import DetectorUnavailableError, make_detector
from talkinghead.landmarks.draw import landmark_image_tensor
from talkinghead.landmarks.iris import points_with_irises_scored
from talkinghead.landmarks.smooth import jitter
from talkinghead.landmarks.track import can_track, detector_box
from talkinghead.metrics import MetricsSuite
from talkinghead.metrics.eyes import blink_score, gaze_errors
from talkinghead.inference.paste import paste_frames
from talkinghead.inference.reenact import Driver, driver_points
from talkinghead.visualize import from_uint8, to_uint8

__all__ = [
    "CROSS_COLUMNS", "DEFAULT_BOX_RELATION", "ClipScore", "CrossRow", "EyeTally", "FoundLandmarks",
    "NON_RIGID_POINTS", "adapt_modes", "cross_csv", "cross_detector", "cross_markdown", "expression_error",
    "eye_reference", "find_landmarks", "inter_ocular", "landmark_jitter", "pose_error", "run_cross", "score_clip",
]

NON_RIGID_POINTS: tuple[int, ...] = tuple(i for i in range(68) if i not in RIGID_POINTS)
CROSS_COLUMNS = ("adapt", "avatars", "pairs", "frames", "CSIM", "pose_NME", "expression_NME", "jitter",
                 "driving_jitter", "faces_found", "gaze_error", "iris_missing", "blink_r", "blinks", "blinks_missed",
                 "faces_fitted")
#: the values of a row that are real numbers (the CSV's float columns, in order)
_FLOATS = ("CSIM", "pose_NME", "expression_NME", "jitter", "driving_jitter")
_EYE_FLOATS = ("gaze_error", "iris_missing", "blink_r")


# ------------------------------------------------------------------------------------------------ landmark errors
def inter_ocular(points: np.ndarray) -> np.ndarray:
    """(..., 68, 2) -> (...): distance of the outer eye corners (iBUG points 36 and 45)."""
    p = np.asarray(points, dtype=np.float64)
    return np.maximum(np.linalg.norm(p[..., 36, :] - p[..., 45, :], axis=-1), 1e-6)


def pose_error(found: np.ndarray, driving: np.ndarray) -> np.ndarray:
    """(N, 68, 2) x 2 -> (N,): mean distance of the rigid points over the driving frame's inter-ocular distance."""
    f, d = np.asarray(found, np.float64), np.asarray(driving, np.float64)
    idx = list(RIGID_POINTS)
    return np.linalg.norm(f[:, idx] - d[:, idx], axis=-1).mean(-1) / inter_ocular(d)


def expression_error(found: np.ndarray, driving: np.ndarray) -> np.ndarray:
    """(N, 68, 2) x 2 -> (N,): mean distance of the non-rigid points over the inter-ocular distance, after the
    similarity that best maps the found rigid points onto the driving ones."""
    f, d = np.asarray(found, np.float64), np.asarray(driving, np.float64)
    rigid, other = list(RIGID_POINTS), list(NON_RIGID_POINTS)
    out = np.empty(len(f))
    for i in range(len(f)):
        aligned = fit_similarity(f[i, rigid], d[i, rigid])(f[i])
        out[i] = np.linalg.norm(aligned[other] - d[i, other], axis=-1).mean()
    return out / inter_ocular(d)


def landmark_jitter(points: np.ndarray, found: np.ndarray | None = None) -> float | None:
    """Jitter (``smooth.jitter``) over the inter-ocular distance, on the runs of consecutive ``found`` frames;
    None when no two consecutive frames have landmarks."""
    p = np.asarray(points, np.float64)
    ok = np.ones(len(p), bool) if found is None else np.asarray(found, bool)
    total, steps = 0.0, 0
    start = 0
    while start < len(p):
        if not ok[start]:
            start += 1
            continue
        end = start
        while end + 1 < len(p) and ok[end + 1]:
            end += 1
        run = p[start : end + 1]
        if len(run) >= 2:
            total += jitter(run / inter_ocular(run)[:, None, None]) * (len(run) - 1)
            steps += len(run) - 1
        start = end + 1
    return total / steps if steps else None


#: where dlib's detector puts its box relative to the 68 points' box (``track.box_relation``): the median over 100
#: procedural-head frames at 64 px (docs/stages.md).  A box fit uses it when the detector found no face in a clip.
DEFAULT_BOX_RELATION = np.array([-0.659, -0.697, 0.561, 0.509])


@dataclass
class FoundLandmarks:
    """The 68 points found on each output frame: ``points`` float64 (N, 68, 2) (zeros where none), ``detected``
    (the detector found the face), ``fitted`` (it did not, and the shape predictor was fitted in the box where the
    driving landmarks put the face)."""

    points: np.ndarray
    detected: np.ndarray
    fitted: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        return self.detected | self.fitted


def find_landmarks(frames: np.ndarray, driving: np.ndarray, detector: Any, fit: bool = True) -> FoundLandmarks:
    """The 68 points on output ``frames`` uint8 (N, S, S, 3) rendered from ``driving`` (N, 68+, 2).

    The detector searches each frame.  Where it finds no face (small, blurry outputs) and it can fit its shape
    predictor in a given box (``fit``, a ``TrackableBackend`` such as dlib), the predictor is fitted in one box for
    the whole clip: the median of the boxes it found in this clip, else the box it would draw around the clip's
    mean driving landmarks (``track.detector_box`` with :data:`DEFAULT_BOX_RELATION`).  One box a clip, so a
    frame's points come from its pixels, never from where its own driving landmarks are.  On procedural heads
    this fit is within about 0.02 NME of a detection (docs/stages.md).
    """
    n = len(frames)
    points = np.zeros((n, 68, 2), np.float64)
    detected, fitted = np.zeros(n, bool), np.zeros(n, bool)
    d = np.asarray(driving, np.float64)[:, :68]
    boxes = []
    if can_track(detector):
        for i, faces in enumerate(detector.faces(np.ascontiguousarray(frames))):
            if faces:  # the face nearest the driving landmarks' centre
                box, pts = min(faces, key=lambda f: float(np.linalg.norm(f[1].mean(0) - d[i].mean(0))))
                points[i], detected[i] = pts, True
                boxes.append(np.asarray(box, np.float64)[:4])
    else:
        for i, pts in enumerate(detector.detect(np.ascontiguousarray(frames))):
            if pts is not None:
                points[i], detected[i] = np.asarray(pts)[:68], True
    if fit and can_track(detector) and not detected.all():
        box = np.median(boxes, axis=0) if boxes else detector_box(d.mean(0), DEFAULT_BOX_RELATION)
        for i in np.flatnonzero(~detected):
            points[i] = detector.fit(np.ascontiguousarray(frames[i]), box)[0]
            fitted[i] = True
    return FoundLandmarks(points, detected, fitted)


def eye_reference(frames: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A driver's eyes as the eye scores read them: its 68 points and the irises the locator finds in its frames
    (uint8 (N, S, S, 3), (N, 68+, 2)) -> (N, 72, 2).  The located irises, not a model's own iris points, so that
    models with and without irises are scored against the same reference (and locator bias cancels); small faces
    are enlarged first (``iris.points_with_irises_scored``)."""
    lms = np.asarray(landmarks, np.float64)[:, :68]
    return np.stack([points_with_irises_scored(f, p) for f, p in zip(frames, lms)])


@dataclass
class ClipScore:
    """Scores of one output clip: per-frame ``pose`` / ``expression`` errors of the frames with landmarks,
    ``jitter`` (None: too few consecutive faces), the driving landmarks' own jitter, faces ``found`` (detected
    or ``fitted``) of ``frames``; with a reference, the eyes: ``gaze`` errors per (frame, eye) with both irises
    (eye widths), ``iris_missing`` of the reference's ``iris_present``, ``blink_r`` (correlation of the eye
    openings over time; None when one does not vary), the reference's ``blinks`` and those ``blinks_missed``."""

    pose: np.ndarray
    expression: np.ndarray
    jitter: float | None
    driving_jitter: float
    found: int
    frames: int
    fitted: int = 0
    gaze: np.ndarray = field(default_factory=lambda: np.zeros(0))
    iris_missing: int = 0
    iris_present: int = 0
    blink_r: float | None = None
    blinks: int = 0
    blinks_missed: int = 0


def score_clip(frames: np.ndarray, driving: np.ndarray, detector: Any, reference: np.ndarray | None = None,
               fit: bool = True) -> ClipScore:
    """Landmark scores of an output clip: ``frames`` uint8 (N, S, S, 3), ``driving`` (N, 68+, 2) the landmarks it
    was rendered from (pixels of the same S x S frames), ``detector`` a ``LandmarkDetector`` (``fit``: see
    :func:`find_landmarks`).  ``reference`` (N, 72, 2), the driver's eyes (:func:`eye_reference`), adds the eye
    scores (``talkinghead.metrics.eyes``): the output's irises are located on its frames like the driver's."""
    found = find_landmarks(frames, driving, detector, fit)
    ok, pts = found.ok, found.points
    d = np.asarray(driving, np.float64)[:, :68]
    score = ClipScore(
        pose_error(pts[ok], d[ok]) if ok.any() else np.zeros(0),
        expression_error(pts[ok], d[ok]) if ok.any() else np.zeros(0),
        landmark_jitter(pts, ok),
        float(landmark_jitter(d) or 0.0),
        int(ok.sum()),
        len(frames),
        int(found.fitted.sum()),
    )
    if reference is not None and ok.any():
        out72 = eye_reference(frames[ok], pts[ok])  # the output's irises, located as the driver's are
        score.gaze, score.iris_missing, score.iris_present = gaze_errors(out72, np.asarray(reference)[ok])
        if ok.sum() >= 2:
            r, score.blinks, score.blinks_missed = blink_score(pts[ok], np.asarray(reference, np.float64)[ok, :68])
            score.blink_r = None if np.isnan(r) else r
    return score


# ------------------------------------------------------------------------------------------------ table
@dataclass
class EyeTally:
    """Eye scores summed over clips (one protocol row): every (frame, eye) gaze error, irises missing of present,
    each clip's blink correlation, blinks and blinks missed."""

    gaze: list[np.ndarray] = field(default_factory=list)
    iris_missing: int = 0
    iris_present: int = 0
    blink_r: list[float] = field(default_factory=list)
    blinks: int = 0
    blinks_missed: int = 0

    def add(self, score: ClipScore) -> None:
        self.gaze.append(score.gaze)
        self.iris_missing += score.iris_missing
        self.iris_present += score.iris_present
        if score.blink_r is not None:
            self.blink_r.append(score.blink_r)
        self.blinks += score.blinks
        self.blinks_missed += score.blinks_missed

    def values(self) -> dict[str, float | None]:
        """``gaze_error`` (mean, eye widths), ``iris_missing`` (fraction), ``blink_r`` (mean over clips); None:
        nothing to score."""
        gaze = np.concatenate(self.gaze) if self.gaze else np.zeros(0)
        return {
            "gaze_error": float(gaze.mean()) if gaze.size else None,
            "iris_missing": self.iris_missing / self.iris_present if self.iris_present else None,
            "blink_r": float(np.mean(self.blink_r)) if self.blink_r else None,
        }


@dataclass
class CrossRow:
    """One adaptation mode's totals over every (avatar, driver) pair."""

    adapt: str
    avatars: int = 0
    pairs: int = 0
    frames: int = 0
    csim: float | None = None
    pose: list[np.ndarray] = field(default_factory=list)
    expression: list[np.ndarray] = field(default_factory=list)
    jitter: list[float] = field(default_factory=list)
    driving_jitter: list[float] = field(default_factory=list)
    found: int = 0
    fitted: int = 0
    eyes: EyeTally = field(default_factory=EyeTally)

    def add(self, score: ClipScore) -> None:
        self.pairs += 1
        self.frames += score.frames
        self.found += score.found
        self.fitted += score.fitted
        self.pose.append(score.pose)
        self.expression.append(score.expression)
        if score.jitter is not None:
            self.jitter.append(score.jitter)
        self.driving_jitter.append(score.driving_jitter)
        self.eyes.add(score)

    def values(self) -> dict[str, float | None]:
        pose = np.concatenate(self.pose) if self.pose else np.zeros(0)
        expr = np.concatenate(self.expression) if self.expression else np.zeros(0)
        return {
            "CSIM": self.csim,
            "pose_NME": float(pose.mean()) if pose.size else None,
            "expression_NME": float(expr.mean()) if expr.size else None,
            "jitter": float(np.mean(self.jitter)) if self.jitter else None,
            "driving_jitter": float(np.mean(self.driving_jitter)) if self.driving_jitter else None,
            **self.eyes.values(),
        }


def _fmt(v: float | None, digits: int = 3) -> str:
    return "unavailable" if v is None else f"{v:.{digits}f}"


def cross_markdown(rows: Sequence[CrossRow], notes: Sequence[str] = ()) -> str:
    lines = [
        "| adapt | avatars | pairs | frames | CSIM ↑ | pose NME ↓ | expression NME ↓ | jitter ↓ | driving jitter "
        "| faces found (fitted) | gaze error ↓ | irises missing | blink r ↑ | blinks missed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        v = r.values()
        lines.append(
            f"| {r.adapt} | {r.avatars} | {r.pairs} | {r.frames} | {_fmt(v['CSIM'])} | {_fmt(v['pose_NME'])} "
            f"| {_fmt(v['expression_NME'])} | {_fmt(v['jitter'], 4)} | {_fmt(v['driving_jitter'], 4)} "
            f"| {r.found}/{r.frames} ({r.fitted}) | {_fmt(v['gaze_error'])} | {_fmt(v['iris_missing'], 2)} "
            f"| {_fmt(v['blink_r'], 2)} | {r.eyes.blinks_missed}/{r.eyes.blinks} |"
        )
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines)


def cross_csv(rows: Sequence[CrossRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CROSS_COLUMNS)
    for r in rows:
        v = r.values()
        w.writerow([r.adapt, r.avatars, r.pairs, r.frames,
                    *("" if v[k] is None else f"{v[k]:.6f}" for k in _FLOATS), r.found,
                    *("" if v[k] is None else f"{v[k]:.6f}" for k in _EYE_FLOATS),
                    r.eyes.blinks, r.eyes.blinks_missed, r.fitted])
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ the protocol
def adapt_modes(values: Sequence[Any]) -> list[str]:
    """``cross.adapt`` -> ["on", "off"] (YAML reads a bare on/off as a boolean)."""
    modes = ["on" if v is True else "off" if v is False else str(v) for v in values]
    bad = sorted(set(modes) - {"on", "off"})
    if bad or not modes:
        raise ConfigError(f"cross.adapt must be a non-empty subset of [on, off], got {list(values)}")
    return list(dict.fromkeys(modes))


def cross_detector(backend: str) -> Any:
    """The landmark detector run on the outputs (``cross.detector``); one that cannot run -> ConfigError."""
    try:
        return make_detector(backend, quiet=True)  # the tables' notes name it
    except (DetectorUnavailableError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cross.detector: {exc}") from exc


def run_cross(
    meta: Any,
    cfg: Mapping[str, Any],
    settings: Any,
    videos: Sequence[str],
    *,
    metrics_cfg: Mapping[str, Any],
    data_root: str | None = None,
    length: int = SYNTHETIC_VIDEO_LENGTH,
    detector: Any = None,
    progress: bool = False,
    eyes: bool = True,
) -> tuple[list[CrossRow], list[str]]:
    """Every held-out avatar driven by every other held-out person's clip, per adaptation mode.

    ``cfg``: the ``cross`` block of ``experiments/evaluate.yaml``; ``videos``: the held-out video ids (the first
    video of each of the first ``cross.persons`` persons is used); ``detector``: a ``LandmarkDetector`` that
    overrides ``cross.detector``; ``eyes``: add the eye scores.  Returns the rows (one per mode) and the table's
    notes.
    """
    from tqdm.auto import tqdm

    modes = adapt_modes(cfg.get("adapt", ["on", "off"]))
    T, num_frames, method = int(cfg.get("T", 8)), int(cfg.get("num_frames", 16)), str(cfg.get("method", "FT"))
    if method not in ("FT", "FF"):
        raise ConfigError(f"cross.method must be FT or FF, got {method!r}")
    if T < 1 or num_frames < 2:
        raise ConfigError(f"cross.T must be >= 1 and cross.num_frames >= 2, got {T} and {num_frames}")
    if detector is None:
        detector = cross_detector(str(cfg.get("detector", "auto")))
    persons = cross_persons(meta, videos, int(cfg.get("persons", 3)), data_root, length)
    clips = driving_clips(persons, T, num_frames)
    suites = {m: MetricsSuite({**dict(metrics_cfg), "fid": False, "ssim": False}, sync_on_compute=False)
              for m in modes}
    rows = {m: CrossRow(m) for m in modes}
    fit = bool(cfg.get("fit", True))
    refs = {pid: eye_reference(to_uint8(c["frames"]), c["landmarks"].numpy()) if eyes else None
            for pid, c in clips.items()}
    bar = tqdm(total=len(persons) * (len(persons) - 1) * len(modes), desc="cross-identity", unit="clip",
               disable=not progress)
    for pid, person in persons.items():
        positions = shots_mod.evenly(person.num_frames // 2, T)
        shots = person.load(positions)
        fitted = fit_avatar(meta, shots, mode=method, settings=settings, person_id=person.person_id,
                            source=person.source)
        paste = None
        if cfg.get("full"):
            frame, box = person.source_frame(positions[0])
            paste = (frame, box, shots["landmarks"][0].numpy())
        real = clips[pid]["frames"]
        for m in modes:
            rows[m].avatars += 1
        for did, drv_frames in clips.items():
            if did == pid:
                continue
            drv = Driver(lambda f=drv_frames: f["frames"], drv_frames["landmarks"].numpy(),
                         persons[did].person_id or did, 10.0, 0, persons[did].source)
            for m in modes:
                points, _ = driver_points(drv, fitted.avatar, m, "neutral", "off")
                fake = _render_cross(fitted, points, meta.image_size, paste)
                suites[m].update(fake, real[torch.arange(len(fake)) % len(real)])
                rows[m].add(score_clip(to_uint8(fake), points, detector, refs[did], fit=fit))
                bar.update(1)
    bar.close()
    for m in modes:
        rows[m].csim = suites[m].compute().get("csim")
    csim_name = next((s.csim_encoder for s in suites.values() if s.csim_encoder), None)
    what = f"{method}, T={T}) driven by the {num_frames}-frame clips of the others" + (
        "; full-frame outputs scored on their face crop" if cfg.get("full") else "")
    return [rows[m] for m in modes], cross_notes(list(rows.values()), list(persons), what, detector, fit, eyes,
                                                 csim_name)


def cross_persons(meta: Any, videos: Sequence[str], most: int, data_root: str | None, length: int) -> dict[str, Any]:
    """The first ``most`` persons of ``videos`` (person id -> its first video's ``shots`` person); at least 2."""
    persons: dict[str, Any] = {}
    for video in videos:
        person = shots_mod.resolve(video, meta.config.data, meta.image_size, data_root=data_root,
                                   synthetic_video_length=length)
        persons.setdefault(person.person_id or video, person)
        if len(persons) >= most:
            break
    if len(persons) < 2:
        raise EvaluationError(f"the cross-identity protocol needs 2 held-out persons or more, found {len(persons)}")
    return persons


def driving_clips(persons: Mapping[str, Any], T: int, num_frames: int) -> dict[str, dict[str, torch.Tensor]]:
    """Each person's driving clip: ``num_frames`` frames of its video's second half (its T sources come from the
    first)."""
    clips: dict[str, dict[str, torch.Tensor]] = {}
    for pid, person in persons.items():
        half = person.num_frames // 2
        if T > half or num_frames > person.num_frames - half:
            raise ConfigError(
                f"cross: {person.source} has {person.num_frames} frames; T={T} sources come from its first half and "
                f"num_frames={num_frames} driving frames from its second: lower cross.T / cross.num_frames")
        clips[pid] = person.load(shots_mod.evenly(person.num_frames - half, num_frames, offset=half))
    return clips


def _render_cross(fitted: Any, points: np.ndarray, size: int, paste: tuple | None) -> torch.Tensor:
    """The avatar's frames (N, 3, S, S) for ``points``; with ``paste`` (source frame, crop box, its landmarks) the
    full-frame output, cut back to its face crop to be scored."""
    fake = fitted.render(torch.stack([landmark_image_tensor(p, size) for p in points]))
    if paste is None:
        return fake
    frame, box, src_lms = paste
    full = paste_frames(to_uint8(fake), points, frame, box, src_lms)
    return from_uint8(np.stack([crop_frame(f, box, size) for f in full]))


def cross_notes(rows: Sequence[CrossRow], persons: Sequence[str], what: str, detector: Any, fit: bool, eyes: bool,
                csim_name: str | None) -> list[str]:
    """The cross-identity table's notes: what was driven by what (``what``: the avatars' method and T onwards), how
    each column is measured, what was missing."""
    found = sum(r.found for r in rows)
    frames = sum(r.frames for r in rows)
    name = getattr(detector, "name", type(detector).__name__)
    notes = [
        f"cross-identity: {len(persons)} held-out persons ({', '.join(list(persons)[:4])}"
        f"{', ...' if len(persons) > 4 else ''}), each an avatar ({what}",
        "pose / expression NME: landmarks found on the output vs the landmarks it was rendered from (adapt on: the "
        "driver's motion on the avatar's face), over the inter-ocular distance; jitter: frame-to-frame landmark "
        f"motion after the head's similarity motion, over the inter-ocular distance; detector: {name}",
    ]
    fitted = sum(r.fitted for r in rows)
    if fitted:
        notes.append(f"the detector found no face on {fitted} of {frames} outputs: its shape predictor was fitted in "
                     "the box the driving landmarks give (faces found (fitted); docs/stages.md has its accuracy)")
    if found < frames:
        notes.append(f"no landmarks on {frames - found} of {frames} outputs (the detector found no face"
                     + ("" if fit and can_track(detector) else " and cannot be fitted in a box")
                     + "): they are left out of pose, expression, jitter and the eye scores"
                     + (" (all: unavailable)" if not found else ""))
    if eyes:
        notes.append(
            "eyes: gaze error = the output's iris centres against the driver's, in eye-normalised coordinates (eye "
            "widths), both located by talkinghead.landmarks.iris on the frames (the same reference for models with "
            "and without iris points); irises missing = the driver's irises the output lacks; blink r = correlation "
            "over time of the output's eye opening with the driver's, blinks missed of the driver's blinks")
    if csim_name:
        notes.append(f"CSIM: output vs a real frame of the avatar's person, encoder {csim_name}")
    return notes
