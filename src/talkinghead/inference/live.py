"""Live driving: an avatar follows a camera, frame by frame (the demo page's Live tab and ``make live``).

Per camera frame, the offline steps of ``talkinghead.api.drive`` in their online form: the face is tracked
(``talkinghead.landmarks.track.OnlineTracker``), its landmarks are moved into the face crop (one box from the first
detection, ``talkinghead.crop``), smoothed (``talkinghead.landmarks.smooth.LandmarkSmoother``), adapted to the
avatar's face shape as ``adapt`` says (``talkinghead.landmarks.adapt``, measured from the first good frame), drawn
and rendered (``talkinghead.inference.reenact.render_frames``).  A frame without a face, or one that is no RGB uint8 image
of a usable size, returns the last good output frame and is counted; nothing raises for bad input.

:class:`LiveLock` lets one live session run per server: a second client is refused (and told to wait) until the
first stops, ends its page session, or renders no frame for ``idle_s`` seconds (frames it sends that are skipped,
or have no face, do not hold the slot).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from talkinghead.inference.avatar import load_avatar, load_meta_learned, resolve_checkpoint
from talkinghead.crop import face_track, landmarks_to_crop
from talkinghead.errors import TalkingHeadError
from talkinghead.inference.export import avatar_renderer
from talkinghead.landmarks.adapt import adapt_landmarks, should_adapt
from talkinghead.landmarks.iris import points_with_irises
from talkinghead.landmarks.sets import IBUG68_IRIS, iris_present
from talkinghead.landmarks.smooth import LandmarkSmoother, face_scale
from talkinghead.landmarks.track import online_tracker
from talkinghead.inference.reenact import DriveOptions, render_frames
from talkinghead.inference.shots import crop_settings, make_landmark_detector

#: frames smaller or larger than this (pixels a side) are skipped
MIN_SIDE, MAX_SIDE = 16, 4096
#: a gap between two frames longer than this (s) is a pause of the stream (a camera stopped, a hidden tab, a client
#: sending a frame now and then), not dropped frames
PAUSE_S = 2.0


class LiveError(TalkingHeadError, RuntimeError):
    """Live driving cannot start (no camera, no avatar)."""


@dataclass
class LiveStats:
    """Counters and timing of a live session.

    ``frames``: frames given to :meth:`LiveSession.process`; ``rendered``: of them, rendered from their own face;
    ``no_face``: held the last good frame (no face found); ``skipped``: not an RGB uint8 image of a usable size;
    ``dropped``: frames the client did not send or the server replaced while it was busy, estimated from the gaps
    before each usable frame at the stream's rate (0 when the rate is unknown; a gap over :data:`PAUSE_S` is a pause,
    not drops; a skipped frame adds no drops: it is counted as skipped).  ``fps``: output frames per second over
    the last ``window_s``; ``latency_ms``: mean time from a frame's arrival to its output frame over that window.
    ``iris_absent``: for an ``ibug68+iris`` avatar, the frames with a face where an iris was not found (a closed
    eye; it is not drawn, never guessed); None for an ``ibug68`` avatar.
    """

    frames: int = 0
    rendered: int = 0
    no_face: int = 0
    skipped: int = 0
    dropped: int = 0
    fps: float = 0.0
    latency_ms: float = 0.0
    camera: tuple[int, int] | None = None  # (width, height) of the last usable frame
    iris_absent: int | None = None

    def markdown(self) -> str:
        """One line for the page."""
        cam = f"camera {self.camera[0]}×{self.camera[1]} · " if self.camera else ""
        return (f"**{self.fps:.1f} frames/s**, latency **{self.latency_ms:.0f} ms** (arrival → frame out) · {cam}"
                f"{self.rendered} rendered, {self.dropped} dropped, {self.no_face} without a face (last good frame "
                f"held), {self.skipped} skipped (bad size or type)"
                + ("" if self.iris_absent is None else f", iris absent in {self.iris_absent}/{self.rendered}"))


class LiveSession:
    """Online driving of one avatar: ``process(frame)`` per camera frame, in order.

    ``renderer``: the avatar's renderer (``talkinghead.inference.export.avatar_renderer``: landmark images (B, 3, S, S) ->
    frames); ``detector``: a landmark detector (tracked frame to frame where it can fit a box); ``options``: the
    :class:`~talkinghead.inference.reenact.DriveOptions` of every surface, of which live driving reads ``adapt`` (a camera is
    no person of the data: auto adapts), ``smooth`` and, in :meth:`from_file`, ``backend``; ``fps``: the camera's
    nominal rate (the smoother's rate before timestamps say otherwise);
    ``interval_s``: the rate frames are sent at, when known (for the dropped-frame estimate); ``threads``: torch
    threads a frame is rendered with (set for the calling thread only, and restored; None: as they are).  One
    thread is the default: one small frame gains little from two, and on a CPU shared with a browser or another
    job two threads waiting on each other made a 64² frame take 0.8 s instead of 14 ms (docs/demo.md).
    """

    def __init__(
        self,
        renderer: Any,
        detector: Any,
        options: DriveOptions | None = None,
        *,
        fps: float = 25.0,
        window_s: float = 2.0,
        interval_s: float | None = None,
        threads: int | None = 1,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.options = options = options or DriveOptions()
        self.renderer = renderer
        self.avatar = renderer.avatar
        # the tracker's 68 points, and for an ibug68+iris avatar the irises located in each camera frame
        self.irises = self.avatar.landmark_set == IBUG68_IRIS
        self.size = int(self.avatar.image_size)
        self.detector = detector
        self.tracker = online_tracker(detector)
        self.adapted = should_adapt(options.adapt, None, self.avatar.person_id)
        self.smooth = options.smooth == "on"
        self.fps = float(fps)
        self.window_s = float(window_s)
        self.interval_s = interval_s
        self.threads = threads
        self.clock = clock
        self.counts = LiveStats(iris_absent=0 if self.irises else None)
        self.last_frame = np.zeros((self.size, self.size, 3), np.uint8)  # until the first good frame
        self._box: np.ndarray | None = None
        self._frame_shape: tuple[int, ...] | None = None
        self._smoother: Any = None
        self._reference: np.ndarray | None = None
        self._times: deque[tuple[float, float]] = deque()  # (output time, latency s) of recent outputs
        self._last_arrival: float | None = None

    @classmethod
    def from_file(
        cls, avatar: str | Path, meta: Any = None, detector: Any = "auto", options: DriveOptions | None = None,
        **kwargs: Any,
    ) -> LiveSession:
        """A session for the avatar file ``avatar`` (``meta``: the loaded model, else the avatar's checkpoint),
        rendered with ``options.backend``; ``kwargs``: the session's own (``fps``, ``interval_s``, ...)."""
        options = options or DriveOptions()
        path = Path(avatar)
        if not path.is_file():
            raise LiveError(f"no avatar file {path}: give the avatar.pt that make finetune printed")
        av = load_avatar(path)
        renderer = avatar_renderer(av, lambda: meta if meta is not None else load_meta_learned(av.checkpoint),
                                   backend=options.backend, avatar_path=path, batch_size=1)
        if isinstance(detector, str):
            detector = make_landmark_detector(detector, "track")
        return cls(renderer, detector, options, **kwargs)

    # -------------------------------------------------------------------------------------------- per frame
    def process(self, frame: Any, arrived: float | None = None) -> np.ndarray:
        """One RGB uint8 (H, W, 3) camera frame -> the avatar's uint8 (S, S, 3) frame.  ``arrived``: when the
        frame reached the server (``clock`` time; default now).  Bad input and faceless frames return the last
        good frame and are counted."""
        arrived = self.clock() if arrived is None else arrived
        c = self.counts
        c.frames += 1
        last, self._last_arrival = self._last_arrival, arrived
        if not _usable(frame):  # counted as skipped; the gap before it adds no drops
            c.skipped += 1
            return self._out(arrived)
        if self.interval_s and last is not None and arrived - last <= PAUSE_S:
            c.dropped += max(0, round((arrived - last) / self.interval_s) - 1)
        frame = np.ascontiguousarray(frame)
        c.camera = (int(frame.shape[1]), int(frame.shape[0]))
        if frame.shape != self._frame_shape:  # a new camera size: a new track and crop box
            self._frame_shape = frame.shape
            self.tracker = online_tracker(self.detector)
            self._box = None
        points = self.tracker.step(frame)
        if points is not None and self.irises:
            points = points_with_irises(frame, points)
        try:
            follow = None if points is None else self._follow(points, arrived)
        except (LiveError, ValueError):  # degenerate landmarks: no usable face
            follow = None
        if follow is None:
            c.no_face += 1
            return self._out(arrived)
        self.last_frame = self._render(follow)
        c.rendered += 1
        if self.irises and not iris_present(follow).all():
            c.iris_absent = (c.iris_absent or 0) + 1
        return self._out(arrived)

    def _follow(self, points: np.ndarray, t: float) -> np.ndarray:
        """Frame-pixel (68, 2) landmarks (72 for ``ibug68+iris``) -> the crop-pixel landmarks the avatar follows."""
        if self._box is None:
            track = face_track([points[:68]], crop_settings(self.size))
            if isinstance(track, str):  # a degenerate face (all points in one spot)
                raise LiveError(track)
            self._box = track[0]
        pts = landmarks_to_crop(points, self._box, self.size)
        if self.smooth:
            if self._smoother is None:
                self._smoother = LandmarkSmoother(self.fps, face_scale(pts[None]), points=len(pts))
            pts = self._smoother(pts, t)
        if not self.adapted:
            return pts
        if self._reference is None:
            self._reference = pts.copy()
        return adapt_landmarks(pts[None], self.avatar.reference_landmarks.numpy(), self._reference)[0]

    def _render(self, points: np.ndarray) -> np.ndarray:
        """(68, 2) crop-pixel landmarks -> uint8 (S, S, 3), with ``threads`` torch threads in this thread."""
        import torch

        before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)  # an OpenMP setting of the calling thread: other threads keep theirs
        try:
            return next(render_frames(self.renderer, points[None], batch_size=1))
        finally:
            torch.set_num_threads(before)

    def _out(self, arrived: float) -> np.ndarray:
        now = self.clock()
        self._times.append((now, now - arrived))
        while self._times and now - self._times[0][0] > self.window_s:
            self._times.popleft()
        return self.last_frame

    @property
    def stats(self) -> LiveStats:
        """The counters, with frames/s and latency over the last ``window_s``."""
        c = self.counts
        times = list(self._times)
        if len(times) >= 2 and times[-1][0] > times[0][0]:
            c.fps = (len(times) - 1) / (times[-1][0] - times[0][0])
        c.latency_ms = 1000.0 * float(np.mean([lat for _, lat in times])) if times else 0.0
        if not math.isfinite(c.fps):
            c.fps = 0.0
        return c


def _usable(frame: Any) -> bool:
    return (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
            and MIN_SIDE <= min(frame.shape[:2]) and max(frame.shape[:2]) <= MAX_SIDE)


# ------------------------------------------------------------------------------------------------ one per server
class LiveLock:
    """One live session per server.  ``acquire(owner)``: True when ``owner`` holds it (taken now, or already
    its own, or taken over from a holder that has not touched it for ``idle_s`` seconds); ``touch(owner)`` on
    each frame rendered (acquiring does not refresh the holder's time: a client sending frames that are skipped
    keeps the slot only ``idle_s`` after it took it or last rendered); ``release(owner)`` when it stops.
    Thread-safe."""

    def __init__(self, idle_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = float(idle_s)
        self.clock = clock
        self.holder: str | None = None
        self.seen = 0.0
        self._lock = threading.Lock()

    def acquire(self, owner: str) -> bool:
        with self._lock:
            now = self.clock()
            if self.holder == owner:
                return True
            if self.holder is not None and now - self.seen <= self.idle_s:
                return False
            self.holder, self.seen = owner, now
            return True

    def touch(self, owner: str) -> None:
        """``owner`` rendered a frame: its slot's idle time starts again."""
        with self._lock:
            if self.holder == owner:
                self.seen = self.clock()

    def release(self, owner: str) -> bool:
        """Free the lock if ``owner`` holds it; True if it did."""
        with self._lock:
            if self.holder != owner:
                return False
            self.holder = None
            return True

    def idle(self) -> bool:
        """True when nobody holds it or the holder has been silent for over ``idle_s``."""
        with self._lock:
            return self.holder is None or self.clock() - self.seen > self.idle_s


WAIT_MESSAGE = ("**Another live session is running on this server: wait until it ends** (when that client stops "
                "its camera, closes its page, or renders no frame for {idle:g} s); this page retries with each frame.")


# ------------------------------------------------------------------------------------------------ make live
def run_camera(avatar: str | Path, camera: int = 0, options: DriveOptions | None = None, *, ckpt: str | None = None,
               detector: str = "auto", runs_dir: str = "runs") -> int:
    """``make live``: a local OpenCV window over :class:`LiveSession` (camera | avatar); q or Esc quits."""
    import cv2

    log = getattr(getattr(cv2, "utils", None), "logging", None)
    level = log.getLogLevel() if log is not None else None
    if log is not None:  # a missing camera is one line below, not OpenCV's backend-by-backend warnings
        log.setLogLevel(log.LOG_LEVEL_SILENT)
    cap = cv2.VideoCapture(int(camera))
    if log is not None:
        log.setLogLevel(level)
    if not cap.isOpened():
        raise LiveError(f"no camera {camera}: OpenCV cannot open it (give another CAMERA=, or use the demo page's "
                        "Live tab)")
    meta = load_meta_learned(resolve_checkpoint(ckpt, runs_dir)) if ckpt else None
    session = LiveSession.from_file(avatar, meta, detector, options)
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                raise LiveError(f"camera {camera} sent no frame")
            out = session.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            h = bgr.shape[0]
            big = cv2.resize(cv2.cvtColor(out, cv2.COLOR_RGB2BGR), (h, h), interpolation=cv2.INTER_LINEAR)
            view = np.concatenate([bgr, big], axis=1)
            s = session.stats
            cv2.putText(view, f"{s.fps:.1f} fps  {s.latency_ms:.0f} ms  no face {s.no_face}", (10, 24),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 255, 0), 2)
            cv2.imshow("talkinghead live (q quits)", view)
            if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                return 0
    finally:
        cap.release()
        cv2.destroyAllWindows()
