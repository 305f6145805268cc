"""``make demo``: a web page (Gradio) to make an avatar from photos or a video and drive it.

    make demo                                   # newest runs/*/checkpoints/last.ckpt, http://127.0.0.1:7860
    make demo CKPT=runs/x/checkpoints/last.ckpt ARGS="--host 0.0.0.0 --port 8080"

Tabs: **Avatar** (1-32 photos, a video, or a held-out person of the model's data -> chosen frames with their
landmarks, a progress bar while fine-tuning, FF beside FT on frames not used; the session's own, to download or
keep on the server), **Drive** (an avatar + an uploaded / webcam / held-out driver video -> driver | landmarks | avatar video and
the frames per second reached), **Live** (the webcam drives an avatar frame by frame: talkinghead.live; one live
session per server), **Runs** (sample grids over iterations, loss curves, evaluation tables).

The page is a thin layer over :mod:`talkinghead.api`.  It reads only uploaded files and the model's own data by
id: no field names a server path.  Long work runs in Gradio's queue, one job at a time.  Each browser session
sees and is sent only what it uploaded or made, kept in a temporary folder of its own (talkinghead.sessions),
removed when the session ends, when its client shows no activity for 15 minutes, and when the server stops
(Ctrl-C or SIGTERM); nothing under runs/ is served.  Uploads are bounded by decoded size (DemoConfig), the upload
route in files a request and bytes a file, the sessions in number and disk (talkinghead.sessions.Limits).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import itertools
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from data_modules.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from talkinghead import api, decode
from talkinghead.errors import TalkingHeadError
from talkinghead.export import BACKENDS, default_out
from talkinghead.fewshot import settings_for
from talkinghead.landmarks.draw import draw_landmarks
from talkinghead.live import WAIT_MESSAGE, LiveLock, LiveSession
from talkinghead.sessions import Limits, ServerFolder, ServerFull, free_name, prune_avatars, session_id
from talkinghead.visualize import to_uint8

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls from the page's server

MAX_PHOTOS = 32
NO_CHECKPOINT = "no meta-learned checkpoint"
#: live frames kept in Gradio's cache per live session (about 1.5 s at 20 frames/s: the page has fetched them by then)
LIVE_FRAMES_KEPT = 32
#: files one POST to Gradio's upload route may carry (MAX_PHOTOS photos and a margin); more: 400, nothing kept
MAX_UPLOAD_FILES = 40
KEEP_OFF = ("keeping avatars on the server is off here (the server's operator turns it on with "
            "`make demo ARGS=--allow-keep`): download avatar.pt instead")


class DemoError(TalkingHeadError, ValueError):
    """Input the page refuses (a path outside the allowed folders, too many photos, ...)."""


@dataclass
class DemoConfig:
    """What ``make demo`` serves: the model, where kept avatars go, limits.

    Bounds on one upload (a job over them gets one line saying which): ``max_file_mb`` as sent;
    ``max_megapixels`` per frame or photo as stored; ``max_video_frames`` frames of a video; ``max_frames``
    frames decoded of it (longer videos are sampled evenly), each scaled down while decoding to ``max_side``
    pixels a side (0: four times the model's resolution, at least 512), so that a job's decoded frames take at
    most max_frames x max_side² x 3 bytes.
    """

    ckpt: str | None = None
    runs_dir: Path = Path("runs")
    avatars_dir: Path = Path("runs/avatars")  # where "Keep on the server" copies a session's avatar
    evaluate_dir: Path = Path("runs/evaluate")
    detector: Any = "auto"
    max_frames: int = 300
    max_file_mb: int = 50
    max_megapixels: float = 16.8  # 4096 x 4096
    max_video_frames: int = 3000  # 2 minutes at 25 frames/s
    max_side: int = 0
    drive_frames: int = 0  # driver frames rendered (0 = all, up to max_frames)
    max_avatars: int = 8  # per session: the oldest goes when a new one is made
    max_age_h: float = 24.0  # avatars older than this are removed, and Gradio's cache copies
    session_idle_s: float = 900.0  # a session whose client shows no activity this long is removed with its files
    max_sessions: int = 16  # sessions at once: a new one beyond is told the server is full
    max_disk_mb: float = 10240.0  # the server's folder (sessions, uploads): no new session or upload beyond
    upload_idle_s: float = 600.0  # an upload no job used (nor waits in the queue to use) goes after this
    max_upload_files: int = MAX_UPLOAD_FILES  # files one upload request may carry
    allow_keep: bool = False  # "Keep it on the server" (copies into avatars_dir): off unless the operator says
    temp_base: Path | None = None  # the server's folder goes under it (default: the system temp dir)
    default_steps: int = 0  # fine-tuning steps shown on the page; 0: the model's recipe (as make finetune)
    extra_notes: list[str] = field(default_factory=list)
    live_every: float = 0.04  # s between webcam frames the Live tab sends (at most 25 frames/s)
    live_idle_s: float = 10.0  # a live session that renders no frame this long frees the server's one live slot
    live_time_limit: int = 600  # s a live stream runs before the page must start it again
    live_backend: str = "auto"  # the Live tab's renderer (talkinghead.export.avatar_renderer)


# ------------------------------------------------------------------------------------------------ safe paths
def safe_child(root: Path, name: str) -> Path:
    """``root/name`` for a plain folder/file name, else :class:`DemoError`: no ``..``, no separator, no absolute
    path, no symlink, nothing that resolves outside ``root``."""
    name = str(name or "")
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name or os.path.isabs(name):
        raise DemoError(f"refused {name!r}: give a name from the list, not a path")
    path = root / name
    if path.is_symlink():
        raise DemoError(f"refused {name!r}: a symbolic link")
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise DemoError(f"refused {name!r}: outside {root.name}/") from None
    return path


def checked_upload(path: str | os.PathLike[str] | None, allowed_roots: Sequence[Path]) -> Path:
    """An uploaded file's path as the server received it: a regular file (not a symlink) inside one of
    ``allowed_roots`` (Gradio's upload cache, this session's folder), else :class:`DemoError`."""
    if path is None or str(path) == "":
        raise DemoError("no file given")
    raw = Path(str(path))
    if ".." in raw.parts:
        raise DemoError(f"refused {raw.name!r}: not an uploaded file")
    if raw.is_symlink():
        raise DemoError(f"refused {raw.name!r}: a symbolic link, not an uploaded file")
    real = raw.resolve()
    if not any(_inside(real, root) for root in allowed_roots):
        raise DemoError(f"refused {raw.name!r}: not an uploaded file")
    if not real.exists():  # swept (unused too long) or a failed job's: gone
        raise DemoError(f"refused {_user_name(raw.name)!r}: it is no longer on the server (uploads are removed when "
                        "a job fails or none uses them for a while): upload it again")
    if not real.is_file():
        raise DemoError(f"refused {raw.name!r}: not a file")
    return real


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root.resolve())
        return True
    except ValueError:
        return False


def load_detector(spec: Any) -> Any:
    """``auto`` | ``dlib`` | ``face-alignment``, or ``module:function`` returning a ``LandmarkDetector``."""
    if not isinstance(spec, str) or ":" not in spec:
        return spec
    module, _, func = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), func)()
    except (ImportError, AttributeError) as exc:
        raise DemoError(f"--detector {spec}: {exc}") from exc


# ------------------------------------------------------------------------------------------------ pictures
def landmarks_over(frames: Any, landmarks: Any, scale_to: int = 256) -> list[np.ndarray]:
    """(N, 3, S, S) frames in [-1, 1] + (N, 68, 2) pixel landmarks -> N uint8 images with the landmarks drawn
    over them, enlarged to ``scale_to`` for viewing."""
    import cv2

    out = []
    for img, pts in zip(to_uint8(frames), np.asarray(landmarks, dtype=np.float32)):
        s = img.shape[0]
        big = cv2.resize(img, (scale_to, scale_to), interpolation=cv2.INTER_NEAREST)
        lm = draw_landmarks(pts * (scale_to / s), scale_to)
        mask = lm.any(axis=2)
        big[mask] = lm[mask]
        out.append(big)
    return out


def enlarge(images: Any, scale_to: int = 192) -> list[np.ndarray]:
    import cv2

    return [cv2.resize(i, (scale_to, scale_to), interpolation=cv2.INTER_NEAREST) for i in to_uint8(images)]


# ------------------------------------------------------------------------------------------------ the app state
class Demo:
    """The server side of the page: the model (loaded once), the server's folder, and one handler per button.

    Every file a session gets is one it uploaded or the page made for it, in its own folder
    (:mod:`talkinghead.sessions`); the Drive list is that session's avatars.  The held-out persons of the model's
    data are the model's and offered to everyone."""

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self._jobs = itertools.count(1)  # names files uniquely: two jobs of one session within a second
        self.avatars_dir = Path(config.avatars_dir)
        self.detector = load_detector(config.detector)
        self.server = ServerFolder(config.temp_base, Limits(
            idle_s=config.session_idle_s, max_sessions=config.max_sessions, max_disk_mb=config.max_disk_mb,
            upload_idle_s=config.upload_idle_s))
        self.app: Any = None  # the page (build_app): its queue says which sessions wait for a job
        # Gradio's upload/output cache lives in the server's folder, so that it goes with it (read when the
        # page is built and launched)
        self._gradio_env = os.environ.get("GRADIO_TEMP_DIR")
        os.environ["GRADIO_TEMP_DIR"] = str(self.server.gradio)
        self.meta = None
        self.model_error = ""
        self._live_setup()
        self.held_out: list[str] = []
        self.max_side = int(config.max_side)
        try:
            self.meta = api.load_model(config.ckpt, config.runs_dir)
            self.held_out = api.held_out_ids(self.meta)
            self.max_side = self.max_side or max(4 * int(self.meta.image_size), 512)
        except TalkingHeadError as exc:
            self.model_error = (
                f"{NO_CHECKPOINT}: {exc} — meta-learn one with `make meta-learn`, or start with "
                f"`make demo CKPT=...`" if "checkpoint" in str(exc).lower() else str(exc)
            )
        self.server.start_sweeper(self.pending)

    def close(self) -> None:
        """Remove the server's folder (sessions and Gradio's cache)."""
        self.server.remove()
        if self._gradio_env is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = self._gradio_env

    # -------------------------------------------------------------------------------------------- sessions
    def session_dir(self, request: Any) -> Path:
        """This session's folder, made when it has none (:class:`~talkinghead.sessions.ServerFull` over the
        server's limits); the client's activity."""
        return self.server.session(session_id(request))

    def session_avatars(self, request: Any) -> Path:
        """This session's avatars folder (not made: reading needs no session)."""
        sid = session_id(request)
        self.server.touch(sid)
        return self.server.sessions / sid / "avatars"

    def ping(self, request: Any) -> None:
        """The open page's periodic sign of life: its session stays (talkinghead.sessions.Limits.idle_s)."""
        from talkinghead.sessions import session_id

        self.server.touch(session_id(request))

    def queued(self) -> list[tuple[str, list[str]]]:
        """(session, files its job names) of each job waiting or running in Gradio's queue."""
        queue = getattr(self.app, "_queue", None)
        if queue is None:
            return []
        try:
            events = [e for q in list(queue.event_queue_per_concurrency_id.values()) for e in list(q.queue)]
            events += [e for job in list(queue.active_jobs) if job for e in job]
        except (AttributeError, RuntimeError, TypeError):  # another Gradio, or the queue changing meanwhile
            return []
        return [(str(getattr(e, "session_hash", "")), _paths_in(getattr(getattr(e, "data", None), "data", None)))
                for e in events]

    def pending(self) -> tuple[set[str], set[str]]:
        """(sessions with a job waiting or running, the files those jobs name and the live frames on show): what
        the sweeper leaves."""
        jobs = self.queued()
        return {sid for sid, _ in jobs}, {f for _, files in jobs for f in files} | {str(f) for f in list(self._live_files)}

    def failed(self, request: Any, staged: Sequence[Path], *uploads: Any) -> None:
        """A job failed: its uploads go at once (the session's copies, and the cache copies that no other
        session claimed and no other session's queued job names)."""
        sid = session_id(request)
        _drop_staged(staged)
        others = {f for owner, files in self.queued() if owner != sid for f in files}
        self.server.drop_cached(sid, _file_paths(uploads), keep=others)

    def end_session(self, request: Any) -> None:
        if getattr(request, "session_hash", None):
            self.live_stop(request)
            self.server.end_session(session_id(request))

    def sent(self, request: Any, *paths: Any) -> None:
        """Note files this session uploaded or is sent, so that their cache copies go when it ends."""
        from talkinghead.sessions import session_id

        self.server.remember_cached(session_id(request), _file_paths(paths))

    def upload_roots(self, request: Any) -> list[Path]:
        return [self.session_dir(request), self.server.gradio]

    def public(self, message: str) -> str:
        """``message`` without the server's folders: an upload is named as the user named it."""
        root = re.escape(str(self.server.root))
        message = re.sub(root + r"/sessions/[^/\s]+/upload_[^/\s]+/", "", message)
        message = re.sub(root + r"/sessions/[^/\s]+/avatars/", "", message)
        message = re.sub(root + r"[^\s:,;]*", "your upload", message)
        return message.replace(str(self.avatars_dir.resolve()) + "/", "").replace(str(self.avatars_dir) + "/", "")

    def require_model(self) -> Any:
        if self.meta is None:
            raise DemoError(self.model_error or NO_CHECKPOINT)
        return self.meta

    def saved_avatars(self, request: Any = None) -> list[str]:
        """This session's avatars, newest first."""
        return [p.parent.name for p in api.list_avatars(self.session_avatars(request))]

    def stamp(self) -> str:
        """A file-name stamp unique to this server: time of day and a job number."""
        return f"{time.strftime('%H%M%S')}_{next(self._jobs)}"

    # -------------------------------------------------------------------------------------------- uploads
    def stage(self, request: Any, upload: Any, suffixes: Sequence[str], what: str,
              staged: list[Path] | None = None) -> Path:
        """Copy one upload into this session's folder under the name the user gave it (appended to ``staged``);
        refuse it (one line naming it) when it is no ``what`` by name or exceeds the size limit."""
        path = upload if isinstance(upload, (str, os.PathLike)) else getattr(upload, "name", upload)
        src = checked_upload(path, self.upload_roots(request))
        name = _user_name(src.name)
        if src.suffix.lower() not in suffixes:
            raise DemoError(f"{name}: not {what} ({', '.join(suffixes)})")
        mb = src.stat().st_size / 2**20
        if mb > self.config.max_file_mb:
            raise DemoError(f"{name} is {mb:.0f} MB: the page takes files up to {self.config.max_file_mb} MB")
        folder = self.session_dir(request) / f"upload_{self.stamp()}"
        folder.mkdir()
        dst = folder / name
        if staged is not None:
            staged.append(dst)
        shutil.copyfile(src, dst)
        return dst

    def check_video(self, video: Path) -> tuple[int, str]:
        """Refuse a video over the page's bounds (one line saying which); -> (frames to decode, 0 = all; note)."""
        info = api.probe_video(video)
        cap = self.config.max_megapixels * 1e6
        if info.width * info.height > cap:
            raise DemoError(
                f"{video.name}: {info.width}×{info.height} pixels a frame; the page takes up to "
                f"{self.config.max_megapixels:g} megapixels a frame (e.g. {_side(cap)}×{_side(cap)})"
            )
        if info.frames > self.config.max_video_frames:
            raise DemoError(
                f"{video.name}: {info.frames} frames; the page takes videos of up to {self.config.max_video_frames} "
                f"frames ({self.config.max_video_frames / max(info.fps, 1e-3):.0f} s at its {info.fps:g} frames/s)"
            )
        limit = int(self.config.max_frames)
        if info.frames > limit:
            return limit, f"The video has {info.frames} frames: {limit} of them, evenly spaced, were used (the page's limit)."
        return 0, ""

    def decode_bounds(self) -> decode.Bounds:
        """The page's bounds on what one job decodes (talkinghead.decode): megapixels per frame or photo, frames
        per video, and max_frames x max_side² x 3 decoded bytes."""
        side = self.max_side or 4096
        return decode.Bounds(max_pixels=int(self.config.max_megapixels * 1e6),
                             max_frames=int(self.config.max_video_frames),
                             max_bytes=max(int(self.config.max_frames), MAX_PHOTOS) * side * side * 3)

    def check_photo(self, photo: Path) -> None:
        """Refuse a photo over the page's pixel bound from its header, nothing decoded (a decompression bomb is
        one line too)."""
        try:
            decode.image_size(photo, bounds=self.decode_bounds())
        except decode.DecodeError:
            raise DemoError(f"{photo.name}: not a readable image") from None

    def stage_source(
        self, request: Any, video: Any, photos: Any, held_out: str | None, staged: list[Path] | None = None,
    ) -> tuple[str | list[Path], str, list[str], int]:
        """The source for ``api.make_avatar`` (a session-folder video, a list of photos in it, or a held-out
        id), its name, notes, and frames to decode (0 = all)."""
        if video:
            src = self.stage(request, video, VIDEO_SUFFIXES, "a video file", staged)
            frames, note = self.check_video(src)
            return str(src), _stem(src.name), [note] if note else [], frames
        if photos:
            files = photos if isinstance(photos, list) else [photos]
            if len(files) > MAX_PHOTOS:
                raise DemoError(f"{len(files)} photos: give at most {MAX_PHOTOS}")
            copies = [self.stage(request, f, IMAGE_SUFFIXES, "an image", staged) for f in files]
            for photo in copies:
                self.check_photo(photo)
            return copies, _stem(copies[0].name), [], 0
        if held_out:
            if held_out not in self.held_out:
                raise DemoError(f"refused {held_out!r}: not a held-out video id of the model's data")
            return held_out, held_out, [], 0
        raise DemoError("give 1-32 photos, a video, or pick a held-out person")

    # -------------------------------------------------------------------------------------------- handlers
    def make_avatar(
        self, video: Any, photos: Any, held_out: str | None, T: float, mode: str, steps: float,
        request: Any = None, progress: Callable[..., Any] | None = None,
    ) -> tuple[str, list[Any], list[Any], str | None, Any, str | None]:
        """-> (status markdown, chosen frames with landmarks, FF | FT | real gallery, preview video, avatar list,
        the avatar file to download)"""
        staged: list[Path] = []
        try:
            self.session_dir(request)  # a new session over the server's limits stops here
            self.sent(request, video, photos or [])
            meta = self.require_model()
            if mode not in ("FT", "FF"):
                raise DemoError(f"mode must be FT or FF, got {mode!r}")
            source, name, notes, max_frames = self.stage_source(request, video, photos, held_out, staged)
            T = int(T)
            steps = int(steps or 0)
            if steps < 0:
                raise DemoError("fine-tuning steps must be >= 0 (0: the model's recipe)")
            # the recipe make finetune and make evaluate use for this model; the page changes only what it shows
            settings = settings_for(meta.config, {"steps": steps} if steps else None)
            folder = self.session_avatars(request)
            out = folder / free_name(folder, f"{api.slug(name)}_T{T}_{mode}") / "avatar.pt"

            def report(fraction: float, message: str) -> None:
                if progress is not None:
                    progress(fraction, desc=message)

            with decode.job(self.decode_bounds()):  # every frame and photo of this job within the page's bounds
                made = api.make_avatar(
                    source, T=T, mode=mode, meta=meta, out=out, detector=self.detector, max_frames=max_frames,
                    max_side=self.max_side, settings=settings, progress=report,
                )
        except TalkingHeadError as exc:
            self.failed(request, staged, video, photos)
            return self.public(_error(exc)), [], [], None, self._avatar_choices(request), None
        except Exception as exc:  # noqa: BLE001 - the page shows one line; the server log keeps the trace
            traceback.print_exc()
            self.failed(request, staged, video, photos)
            return self.public(_error(exc, unexpected=True)), [], [], None, self._avatar_choices(request), None
        _drop_staged(staged)  # the avatar is made: the session's copy of its input goes
        removed = prune_avatars(folder, self.config.max_avatars + 1, self.config.max_age_h * 3600)
        notes += [f"Removed your oldest avatar `{n}` (the page keeps {self.config.max_avatars} per session, "
                  f"for up to {self.config.max_age_h:g} h)." for n in removed if n != made.path.parent.name]
        shown = made.path.parent / "shown"
        chosen = [
            (_png(img, shown / f"chosen_{i + 1}.png"), f"frame {i + 1}")
            for i, img in enumerate(landmarks_over(made.shots["frames"], made.shots["landmarks"]))
        ]
        pv = made.preview
        compare: list[tuple[str, str]] = []
        for i in range(min(4, pv["fake"].shape[0])):
            row = ([("FF", pv["ff"])] if "ff" in pv else []) + [(mode, pv["fake"]), ("real", pv["frames"])]
            for label, images in row:
                compare.append((_png(enlarge(images[i : i + 1])[0], shown / f"{label}_{i + 1}.png"), f"{label} {i + 1}"))
        where = "frames the avatar was not made from" if made.preview_unseen else "its own T frames (no other frame)"
        av = made.avatar
        lines = [
            f"**Avatar `{made.path.parent.name}`** saved ({av.mode}, T={av.T}, {av.steps} "
            f"fine-tuning steps, {made.fitted.seconds:.1f} s) for this session. L1 on its T frames: {made.fitted.l1_before:.3f} (FF) → "
            f"{made.fitted.l1_after:.3f}.",
            f"Comparison on {where}: " + ("FF | FT | real" if "ff" in pv else "FF | real") + ".",
            "It is removed when you close the page: download `avatar.pt` below (`make reenact AVATAR=avatar.pt "
            "DRIVER=...` drives it)" + (", or keep it on the server." if self.config.allow_keep else "."),
            *notes, *made.notes,
        ]
        self.sent(request, [c for c, _ in chosen], [c for c, _ in compare], made.video_path, made.path)
        return ("\n\n".join(lines), chosen, compare, str(made.video_path),
                self._avatar_choices(request, made.path.parent.name), str(made.path))

    def session_avatar(self, request: Any, avatar_name: str | None) -> Path:
        """This session's avatar file of that name, else :class:`DemoError`."""
        if not avatar_name:
            raise DemoError("make an avatar first")
        avatar = safe_child(self.session_avatars(request), str(avatar_name)) / "avatar.pt"
        if avatar.is_symlink() or not avatar.is_file():
            raise DemoError(f"no avatar named {avatar_name!r} in this session")
        return avatar

    def keep(self, avatar_name: str | None, request: Any = None) -> str:
        """Copy this session's avatar to the server's avatars folder (``runs/avatars``), under a new name."""
        try:
            if not self.config.allow_keep:
                raise DemoError(KEEP_OFF)
            self.require_model()
            avatar = self.session_avatar(request, avatar_name)
            self.avatars_dir.mkdir(parents=True, exist_ok=True)
            name = free_name(self.avatars_dir, avatar.parent.name)
            shutil.copytree(avatar.parent, self.avatars_dir / name, ignore=shutil.ignore_patterns("shown"))
        except TalkingHeadError as exc:
            return self.public(_error(exc))
        except OSError as exc:
            return f"**Error:** cannot keep it on the server: {exc.strerror or exc}"
        return f"Kept on the server as `{name}` (in its avatars folder, for `make reenact`)."

    def export_onnx(self, avatar_name: str | None, request: Any = None) -> tuple[str, str | None]:
        """This session's avatar as one ONNX file (``make export``), beside it: the Drive tab's onnx backend
        then uses it.  -> (status markdown, the file to download)"""
        try:
            meta = self.require_model()
            avatar = self.session_avatar(request, avatar_name)
            out = default_out(avatar)
            if out.is_file():
                lines = [f"`{avatar.parent.name}` was exported before: its `avatar.onnx`."]
            else:
                made = api.export_avatar(avatar, out, meta=meta)
                lines = [f"Exported `{avatar.parent.name}` to one ONNX file ({made.bytes / 2**20:.1f} MB, "
                         f"{made.seconds:.1f} s; max |ONNX − PyTorch| {made.max_abs_error:.1e} ≤ {made.tolerance:g})."]
            lines.append("It renders landmark images with onnxruntime alone (docs/export.md); Drive's onnx "
                         "backend uses it.")
        except TalkingHeadError as exc:
            return self.public(_error(exc)), None
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            return self.public(_error(exc, unexpected=True)), None
        self.sent(request, out)
        return " ".join(lines), str(out)

    def drive(
        self, avatar_name: str | None, video: Any, held_out: str | None, adapt: str, full: bool = False,
        backend: str = "auto", request: Any = None, progress: Callable[..., Any] | None = None,
    ) -> tuple[str, str | None, str | None]:
        """-> (status markdown, result video, download file).  ``full``: the avatar's whole source frame with the
        face pasted back (else driver | landmarks | avatar side by side); ``backend``: auto | torch | onnx (onnx
        uses the avatar's exported file when the page made one, else exports it in memory first)."""
        staged: list[Path] = []
        try:
            self.session_dir(request)  # a new session over the server's limits stops here
            self.sent(request, video)
            meta = self.require_model()
            if adapt not in ("auto", "on", "off"):
                raise DemoError(f"adaptation must be auto, on or off, got {adapt!r}")
            if backend not in BACKENDS:
                raise DemoError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
            avatar = self.session_avatar(request, avatar_name)
            notes: list[str] = []
            sdir = self.session_dir(request)
            stamp = self.stamp()
            max_frames = int(self.config.drive_frames)
            if video:
                driver = self.stage(request, video, VIDEO_SUFFIXES, "a video file", staged)
                limit, note = self.check_video(driver)
                notes += [note] if note else []
                max_frames = limit or max_frames
                driver_arg: str = str(driver)
            elif held_out:
                if held_out not in self.held_out:
                    raise DemoError(f"refused {held_out!r}: not a held-out video id of the model's data")
                driver_arg = held_out
            else:
                raise DemoError("give a driver: upload a video, record one with the webcam, or pick a held-out video")

            def report(fraction: float, message: str) -> None:
                if progress is not None:
                    progress(fraction, desc=message)

            out = sdir / f"driven_{api.slug(str(avatar_name))}_{stamp}.mp4"
            with decode.job(self.decode_bounds()):
                clip = api.drive(
                    avatar, driver_arg, out, side_by_side=not full, full=bool(full), adapt=adapt, meta=meta,
                    detector=self.detector, max_frames=max_frames, max_side=self.max_side, progress=report,
                    backend=backend,
                )
        except TalkingHeadError as exc:
            self.failed(request, staged, video)
            return self.public(_error(exc)), None, None
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            self.failed(request, staged, video)
            return self.public(_error(exc, unexpected=True)), None, None
        _drop_staged(staged)  # driven: the session's copy of the driver goes
        mode = "adapted to the avatar's face shape" if clip.adapted else "raw driver landmarks"
        layout = "the avatar's whole photo, face pasted back" if clip.full else "driver | landmarks | avatar"
        lines = [
            f"**{clip.frames} frames** ({layout}), {mode}: **{clip.fps:.1f} frames/s** rendered with "
            f"{clip.backend} and encoded; first frame {clip.first_frame_s:.1f} s after the click, "
            f"{clip.seconds:.1f} s in all.",
            *notes, *clip.notes,
        ]
        self.sent(request, clip.path)
        return "\n\n".join(lines), str(clip.path), str(clip.path)

    # -------------------------------------------------------------------------------------------- live
    def _live_setup(self) -> None:
        import threading

        self.live_lock = LiveLock(self.config.live_idle_s)
        self._live: tuple[str, Path, Any] | None = None  # (owner session, avatar file, LiveSession)
        self._live_guard = threading.Lock()
        self._live_detector: Any = None
        self._live_files: collections.deque[Path] = collections.deque()  # cache folders of the shown live frames

    def _live_image(self, frame: np.ndarray) -> str:
        """``frame`` (S, S, 3) as a JPEG in Gradio's cache, where the page fetches it from; only the newest
        :data:`LIVE_FRAMES_KEPT` stay on disk (a live stream would otherwise leave one file a frame, for a day)."""
        from gradio.processing_utils import save_img_array_to_cache

        while len(self._live_files) >= LIVE_FRAMES_KEPT:  # make room first: never more than KEPT on disk, even briefly
            old = self._live_files.popleft()
            if old not in self._live_files:  # a repeated frame (held on no face) shares its folder
                shutil.rmtree(old, ignore_errors=True)
        path = Path(save_img_array_to_cache(frame, str(self.server.gradio), format="jpeg"))
        self._live_files.append(path.parent)
        return str(path)

    def _drop_live_files(self) -> None:
        while self._live_files:
            shutil.rmtree(self._live_files.popleft(), ignore_errors=True)

    def live_frame(
        self, frame: Any, avatar_name: str | None, request: Any = None
    ) -> tuple[str | None, str]:
        """One webcam frame of the Live tab (RGB uint8 (H, W, 3), or the one-line refusal :func:`read_live_frame`
        returned for it) -> (the avatar's frame (S, S, 3) as a JPEG file in Gradio's cache, or None; status
        markdown: frames/s, latency, counts; or why not, e.g. another live session is running)."""
        arrived = time.perf_counter()
        if isinstance(frame, TalkingHeadError):  # refused before decoding (read_live_frame): one line, no frame
            return None, self.public(_error(frame))
        owner = session_id(request)
        if not self.live_lock.acquire(owner):
            return None, WAIT_MESSAGE.format(idle=self.live_lock.idle_s)
        try:
            meta = self.require_model()
            avatar = self.session_avatar(request, avatar_name)
            with self._live_guard:
                if self._live is None or self._live[:2] != (owner, avatar):
                    self._drop_live_files()
                    if self._live_detector is None:
                        from talkinghead.shots import make_landmark_detector

                        self._live_detector = (make_landmark_detector(self.detector, "track")
                                               if isinstance(self.detector, str) else self.detector)
                    self._live = (owner, avatar, LiveSession.from_file(
                        avatar, meta, self._live_detector, backend=self.config.live_backend,
                        interval_s=self.config.live_every))
                live = self._live[2]
                rendered = live.counts.rendered
                out = live.process(frame, arrived)
                if live.counts.rendered > rendered:  # only a rendered frame keeps the slot (not a skipped one)
                    self.live_lock.touch(owner)
                return (None if out is None else self._live_image(out)), live.stats.markdown()
        except TalkingHeadError as exc:
            self.live_lock.release(owner)
            return None, self.public(_error(exc))
        except Exception as exc:  # noqa: BLE001 - the page shows one line; the server log keeps the trace
            traceback.print_exc()
            self.live_lock.release(owner)
            return None, self.public(_error(exc, unexpected=True))

    def live_stop(self, request: Any = None) -> str:
        """End this session's live driving (its stream stopped, its page closed): the server's live slot is free."""
        owner = session_id(request)
        with self._live_guard:
            ended = self._live is not None and self._live[0] == owner
            if ended:
                self._live = None
                self._drop_live_files()
        freed = self.live_lock.release(owner)
        if ended or freed:
            print(f"live session of {owner[:8]} ended", file=sys.stderr, flush=True)
            return "Live session ended."
        return ""

    def runs(self) -> list[str]:
        return [r.name for r in api.list_runs(self.config.runs_dir)]

    def show_run(self, name: str | None) -> tuple[str, list[Any], Any]:
        """-> (status markdown, sample grids over iterations, loss curves as a long table)"""
        import pandas as pd

        empty = pd.DataFrame({"step": [], "value": [], "metric": []})
        try:
            if not name:
                return "No run chosen (meta-learn one with `make meta-learn`).", [], empty
            safe_child(Path(self.config.runs_dir), str(name))
            run = next((r for r in api.list_runs(self.config.runs_dir) if r.name == name), None)
            if run is None:
                raise DemoError(f"no run named {name!r}")
            curves = api.loss_curves(run)
            rows = [(s, v, k) for k, pts in curves.items()
                    if k.startswith(("train/", "val/")) and k != "train/iteration" for s, v in pts]
            df = pd.DataFrame(rows, columns=["step", "value", "metric"]) if rows else empty
            grids = [(_image(p), f"iteration {i}") for i, p in run.samples]
            lines = [
                f"**{run.name}**: {len(run.samples)} sample grids (K sources | target landmarks | generated | real)"
                + (f", up to iteration {run.iterations}" if run.iterations else "")
                + ("; checkpoint: `checkpoints/last.ckpt`" if run.checkpoint else ""),
            ]
            if not rows:
                lines.append("No CSV log in this run (loss curves need `logger=csv`; W&B runs: see W&B).")
            return "\n\n".join(lines), grids, df
        except TalkingHeadError as exc:
            return _error(exc), [], empty

    def evaluations(self) -> tuple[str, list[Any]]:
        found = api.list_evaluations(self.config.evaluate_dir)
        if not found:
            return "No evaluation yet: `make evaluate` writes its tables here.", []
        text = "\n\n".join(f"### {e.name}\n\n{e.table}" for e in found[:5])
        return text, [(_image(e.examples), e.name) for e in found[:5] if e.examples]

    def _avatar_choices(self, request: Any, value: str | None = None) -> Any:
        import gradio as gr

        names = self.saved_avatars(request)
        return gr.update(choices=names, value=value if value in names else (names[0] if names else None))


def _drop_staged(staged: Sequence[Path]) -> None:
    """Remove the session's copies of a job's uploads (each in a folder of its own, :meth:`Demo.stage`)."""
    for upload_folder in {p.parent for p in staged}:
        shutil.rmtree(upload_folder, ignore_errors=True)


def _file_paths(items: Any) -> list[str]:
    """The file paths among ``items`` (paths, lists of them, objects with a ``name``: what Gradio hands over)."""
    out: list[str] = []
    for item in items if isinstance(items, (list, tuple)) else [items]:
        if isinstance(item, (list, tuple)):
            out += _file_paths(item)
        elif isinstance(item, (str, os.PathLike)):
            out.append(str(item))
        elif getattr(item, "name", None):
            out.append(str(item.name))
    return out


def _paths_in(payload: Any) -> list[str]:
    """The ``path`` of every file (Gradio's FileData: ``{"path": ...}``) in a queued job's payload."""
    if isinstance(payload, dict):
        found = [str(payload["path"])] if isinstance(payload.get("path"), str) else []
        return found + [p for v in payload.values() if isinstance(v, (dict, list)) for p in _paths_in(v)]
    if isinstance(payload, list):
        return [p for v in payload for p in _paths_in(v)]
    return []


def _stem(name: str) -> str:
    return Path(name).stem or "upload"


def _user_name(name: str) -> str:
    """An upload's file name as the user gave it, made safe as one file name (no separators, no leading dot)."""
    name = re.sub(r"[\x00-\x1f/\\]", "_", name).lstrip(".") or "upload"
    return name[-120:]


def _side(pixels: float) -> int:
    return int(pixels**0.5)


def _png(image: np.ndarray, path: Path) -> str:
    """Write a uint8 image as PNG (the page sends files of the session's folder, nothing else)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return str(path)


def _image(path: Path) -> np.ndarray:
    """A picture of the runs folder as pixels: the page sends a copy, never a path under runs/."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _error(exc: BaseException, unexpected: bool = False) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if unexpected:
        return f"**Error:** unexpected failure ({type(exc).__name__}: {first}); the server log has the details."
    return f"**Error:** {first}"


# ------------------------------------------------------------------------------------------------ live frames
#: a live frame's bounds, checked on the encoded frame before it is decoded: its bytes, and the pixels its
#: PNG/JPEG header states (a webcam sends far less; a flat 12000² PNG is 18 KB sent, 432 MB decoded as RGB)
LIVE_BOUNDS = decode.Bounds(max_pixels=4096 * 4096, max_encoded=16 * 10**6)


def read_live_frame(payload: Any, bounds: decode.Bounds = LIVE_BOUNDS) -> np.ndarray | TalkingHeadError | None:
    """A live frame as Gradio receives it (an uploaded file, or a ``data:`` URL) -> uint8 (H, W, 3) RGB, or the
    one-line error (returned, not raised: the stream goes on) when it is over a bound or no image; its size is
    checked on the encoded bytes and the header before any pixel is decoded."""
    import base64
    import binascii

    if payload is None:
        return None
    url = str(getattr(payload, "url", None) or "")
    name = "the live frame"
    try:
        if url.startswith("data:"):
            encoded = url.partition(",")[2]
            if bounds.max_encoded and len(encoded) * 3 // 4 > bounds.max_encoded:
                return decode.DecodeBoundError(f"{name}: {len(encoded) * 3 // 4 / 1e6:.3g} MB encoded, over the "
                                               f"bound of {bounds.max_encoded / 1e6:.3g} MB per image")
            return decode.read_image(base64.b64decode(encoded), name=name, bounds=bounds, charge=False)
        path = getattr(payload, "path", None)
        if not path:
            return decode.DecodeError(f"{name}: no image sent")
        return decode.read_image(path, name=name, bounds=bounds, charge=False)
    except (decode.DecodeBoundError, decode.DecodeError) as exc:
        return exc
    except binascii.Error:
        return decode.DecodeError(f"{name}: not a readable image")


def live_camera(gr: Any, **kwargs: Any) -> Any:
    """The Live tab's streaming ``gr.Image``, whose frames go through :func:`read_live_frame` instead of Gradio's
    preprocessing (which decodes a frame of any size before the handler sees it).  The instance's ``preprocess``
    is replaced, not subclassed: Gradio writes a ``.pyi`` beside the module of every component class defined."""
    camera = gr.Image(**kwargs)
    camera.preprocess = read_live_frame
    return camera


# ------------------------------------------------------------------------------------------------ the page
def build_app(demo: Demo) -> Any:
    """The Gradio Blocks of the page (not launched): a banner, then one tab per job, each laid out by its own function
    (:func:`avatar_tab`, :func:`drive_tab`, :func:`live_tab`, :func:`runs_tab`), then the events that join them."""
    import gradio as gr  # the page's own dependency: the CLI's other stages run without importing it

    cfg = demo.config
    banner = (
        f"**Model:** `{Path(demo.meta.path).parent.parent.name}/{Path(demo.meta.path).name}` "
        f"({demo.meta.image_size}² px)" if demo.meta is not None
        else f"**Error:** {demo.model_error}"
    )
    age_s = int(cfg.max_age_h * 3600)
    # Gradio's cache (in the server's folder): copies older than the avatars' age limit go, checked hourly
    with gr.Blocks(title="talkinghead demo", analytics_enabled=False, delete_cache=(min(3600, age_s), age_s)) as app:
        gr.Markdown(
            "# talkinghead — few-shot talking heads\n"
            "Make an avatar of a person from a few photos or a video (Zakharov et al. 2019, Sec. 3.4), then drive "
            "it with another video's facial landmarks.\n\n" + banner,
            elem_id="banner",
        )
        a = avatar_tab(gr, demo)
        d = drive_tab(gr, demo)
        live = live_tab(gr, demo)
        r = runs_tab(gr, demo)
        wire_events(gr, demo, app, a, d, live, r)
    demo.app = app
    return app


def avatar_tab(gr: Any, demo: Demo) -> SimpleNamespace:
    """The Avatar tab's components: the person's video, photos or held-out id, T, FT/FF, steps; what was made."""
    cfg = demo.config
    with gr.Tab("Avatar"):
        with gr.Row():
            with gr.Column():
                video = gr.Video(label=f"A video of the person (up to {cfg.max_file_mb} MB; longer than "
                                       f"{cfg.max_frames} frames: sampled)", sources=["upload"],
                                 height=240, elem_id="avatar-video")
                photos = gr.File(label=f"…or 1–{MAX_PHOTOS} photos", file_count="multiple",
                                 file_types=list(IMAGE_SUFFIXES), type="filepath", elem_id="avatar-photos")
                held = gr.Dropdown(choices=[""] + demo.held_out, value="",
                                   label="…or a held-out person of the model's data (by id)",
                                   elem_id="avatar-heldout")
                gr.Markdown("The video is used when given, else the photos, else the held-out person.")
            with gr.Column():
                T = gr.Slider(1, MAX_PHOTOS, value=8, step=1, label="T: frames the avatar is made from")
                mode = gr.Radio(["FT", "FF"], value="FT", label="FT: fine-tune G and D on the T frames; "
                                "FF: feed-forward, ψ' = P ê (no training)")
                steps = gr.Number(value=cfg.default_steps, minimum=0, maximum=2000, precision=0,
                                  label="fine-tuning steps (FT; 0: the model's recipe, as make finetune)")
                make = gr.Button("Make avatar", variant="primary", elem_id="make-avatar")
        gr.Markdown(f"Avatars made here are this browser session's only ({cfg.max_avatars} at most, for up to "
                    f"{cfg.max_age_h:g} h) and are removed when the page is closed (or after "
                    f"{cfg.session_idle_s / 60:g} min without it open): download one"
                    + (", or keep it on the server." if cfg.allow_keep else "."))
        avatar_status = gr.Markdown(elem_id="avatar-status")
        chosen = gr.Gallery(label="Chosen frames with their detected landmarks", columns=8, height="auto",
                            elem_id="chosen-frames")
        compare = gr.Gallery(label="FF | FT | real, on frames the avatar was not made from", columns=6,
                             height="auto", elem_id="compare")
        preview = gr.Video(label="Preview: real | landmarks | avatar", interactive=False, elem_id="preview")
        with gr.Row():
            avatar_file = gr.File(label="Download the avatar (avatar.pt)", interactive=False, elem_id="avatar-file")
            with gr.Column():
                keep = gr.Button("Keep it on the server (its avatars folder)", elem_id="keep-avatar",
                                 visible=cfg.allow_keep)  # off unless the operator says (--allow-keep)
                keep_status = gr.Markdown(elem_id="keep-status")
                export = gr.Button("Export it as one ONNX file (runs with onnxruntime alone)",
                                   elem_id="export-avatar")
                export_status = gr.Markdown(elem_id="export-status")
                onnx_file = gr.File(label="Download avatar.onnx", interactive=False, elem_id="onnx-file")
    return SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("gr", "demo", "cfg")})


def drive_tab(gr: Any, demo: Demo) -> SimpleNamespace:
    """The Drive tab's components: avatar, driver video or held-out id, adaptation, whole photo, renderer; the clip."""
    with gr.Tab("Drive"):
        with gr.Row():
            with gr.Column():
                avatar = gr.Dropdown(choices=[], value=None, label="Avatar (made on this page, this session)",
                                     elem_id="drive-avatar")
                driver = gr.Video(label="Driver: upload a video or record one with the webcam",
                                  sources=["upload", "webcam"], height=240, elem_id="driver-video")
                driver_held = gr.Dropdown(choices=[""] + demo.held_out, value="",
                                          label="…or a held-out video of the model's data", elem_id="driver-heldout")
                adapt = gr.Radio(["auto", "on", "off"], value="auto",
                                 label="Landmark adaptation: on keeps the avatar's face shape and moves it as the "
                                       "driver moves; off uses the driver's raw landmarks (the paper)")
                with gr.Row():
                    full = gr.Checkbox(value=False, label="Whole photo: the face pasted back into the avatar's "
                                       "source frame (else driver | landmarks | avatar)", elem_id="drive-full")
                    backend = gr.Radio(["auto", "torch", "onnx"], value="auto", elem_id="drive-backend",
                                       label="Renderer: torch, onnx (onnxruntime; the exported file when there "
                                             "is one), auto (the faster)")
                go = gr.Button("Drive", variant="primary", elem_id="drive")
            with gr.Column():
                drive_status = gr.Markdown(elem_id="drive-status")
                result = gr.Video(label="driver | landmarks | avatar", interactive=False, autoplay=True,
                                  loop=True, height=260, elem_id="result-video")
                download = gr.File(label="Download the mp4", interactive=False, elem_id="result-file")
    return SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("gr", "demo")})


def live_tab(gr: Any, demo: Demo) -> SimpleNamespace:
    """The Live tab's components: avatar and webcam; the avatar's frames as they come and their figures."""
    with gr.Tab("Live") as tab:
        with gr.Row():
            with gr.Column():
                live_avatar = gr.Dropdown(choices=[], value=None, label="Avatar (made on this page, this session)",
                                          elem_id="live-avatar")
                camera = live_camera(gr, label="Webcam: start it to drive the avatar live", sources=["webcam"],
                                     streaming=True, type="numpy", height=260, elem_id="live-camera",
                                     webcam_options=gr.WebcamOptions(mirror=False))  # frames as the camera sees
            with gr.Column():
                live_out = gr.Image(label="Avatar, live", interactive=False, format="jpeg", height=260,
                                    elem_id="live-output")
                live_status = gr.Markdown(elem_id="live-status")
        gr.Markdown("One live session runs at a time on this server; the server drops frames it has no time "
                    "for (the newest frame replaces a waiting one), so the delay stays bounded instead of growing.")
    return SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("gr", "demo", "cfg")})


def runs_tab(gr: Any, demo: Demo) -> SimpleNamespace:
    """The Runs tab's components: a meta-learning run's curves and sample grids, and the evaluations."""
    with gr.Tab("Runs"):
        with gr.Row():
            run = gr.Dropdown(choices=demo.runs(), value=(demo.runs() or [None])[0], label="Meta-learning run",
                              elem_id="run")
            refresh = gr.Button("Refresh")
        run_status = gr.Markdown()
        curves = gr.LinePlot(x="step", y="value", color="metric", label="Losses (CSV logger)", height=300)
        grids = gr.Gallery(label="Sample grids over iterations", columns=2, height="auto")
        gr.Markdown("### Evaluations (`make evaluate`)")
        eval_text = gr.Markdown()
        eval_examples = gr.Gallery(label="Example frames: per T, sources | landmarks | FT | FF | real", columns=1,
                                   height="auto")

    return SimpleNamespace(**{k: v for k, v in locals().items() if k not in ("gr", "demo")})


def wire_events(gr: Any, demo: Demo, app: Any, a: SimpleNamespace, d: SimpleNamespace, live: SimpleNamespace,
                r: SimpleNamespace) -> None:
    """The page's events: each tab's buttons to the :class:`Demo` methods over the API, the session's pings, the
    avatar lists that the Avatar tab fills for the Drive and Live tabs, and the live stream."""
    cfg = demo.config
    made = [a.avatar_status, a.chosen, a.compare, a.preview, d.avatar, a.avatar_file]  # a new avatar, in Drive's list
    run_views = [r.run, r.run_status, r.grids, r.curves, r.eval_text, r.eval_examples]

    def on_make(video, photos, held, T, mode, steps, request: gr.Request, progress=gr.Progress()):
        return demo.make_avatar(video, photos, held, T, mode, steps, request=request, progress=progress)

    def on_drive(avatar, driver, driver_held, adapt, full, backend, request: gr.Request, progress=gr.Progress()):
        return demo.drive(avatar, driver, driver_held, adapt, full, backend, request=request, progress=progress)

    def on_keep(avatar, request: gr.Request):
        return demo.keep(avatar, request=request)

    def on_export(avatar, request: gr.Request):
        return demo.export_onnx(avatar, request=request)

    def on_load(request: gr.Request):
        return demo._avatar_choices(request)

    def on_unload(request: gr.Request) -> None:
        demo.end_session(request)

    def on_live(frame, name, request: gr.Request):
        return demo.live_frame(frame, name, request=request)

    def on_live_stop(request: gr.Request):
        return demo.live_stop(request)

    def on_live_avatars(name, request: gr.Request):
        return demo._avatar_choices(request, name)

    def on_ping(request: gr.Request) -> None:
        demo.ping(request)

    # the page's handlers get the browser session (per-session folders): annotations must be real classes
    for fn in (on_make, on_drive, on_keep, on_export, on_load, on_unload, on_live, on_live_stop,
               on_live_avatars, on_ping):
        fn.__annotations__["request"] = gr.Request
    # an open page says so a few times per idle limit: its session stays; a client gone does not
    gr.Timer(max(1.0, min(60.0, cfg.session_idle_s / 3))).tick(on_ping, None, None, api_name=False, queue=False,
                                                              show_progress="hidden")

    a.make.click(on_make, [a.video, a.photos, a.held, a.T, a.mode, a.steps], made,
                 api_name="make_avatar", concurrency_limit=1, concurrency_id="model")
    a.keep.click(on_keep, [d.avatar], [a.keep_status], api_name="keep")
    a.export.click(on_export, [d.avatar], [a.export_status, a.onnx_file], api_name="export",
                   concurrency_limit=1, concurrency_id="model")
    d.go.click(on_drive, [d.avatar, d.driver, d.driver_held, d.adapt, d.full, d.backend],
               [d.drive_status, d.result, d.download], api_name="drive", concurrency_limit=1, concurrency_id="model")

    def on_refresh(name):
        runs = demo.runs()
        name = name if name in runs else (runs[0] if runs else None)
        status, g, df = demo.show_run(name)
        text, ex = demo.evaluations()
        return gr.update(choices=runs, value=name), status, g, df, text, ex

    r.refresh.click(on_refresh, [r.run], run_views, api_name="runs")
    r.run.change(lambda n: demo.show_run(n), [r.run], [r.run_status, r.grids, r.curves], api_name="show_run")
    app.load(on_refresh, [r.run], run_views, api_name=False)
    app.load(on_load, None, [d.avatar], api_name="avatars")  # this session's avatars (none in a new one)
    # Live: each webcam frame is one step of one stream event; frames that arrive while the server is busy
    # replace the one waiting (Gradio keeps the latest input of a stream), and the page sends none while its
    # last is pending: frames are dropped, never queued
    live.tab.select(on_live_avatars, [live.live_avatar], [live.live_avatar], api_name=False)
    app.load(on_live_avatars, [live.live_avatar], [live.live_avatar], api_name=False)
    live.camera.stream(on_live, [live.camera, live.live_avatar], [live.live_out, live.live_status], api_name="live",
                       stream_every=cfg.live_every, time_limit=cfg.live_time_limit, concurrency_limit=4,
                       concurrency_id="live", show_progress="hidden").then(
        on_live_stop, None, [live.live_status], api_name=False)
    app.unload(on_unload)


def launch(app: Any, demo: Demo, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> Any:
    """Serve ``app`` (Gradio's queue: long work waits its turn).  No folder is served as such: Gradio serves the
    copies it makes in its cache of files the page sent; the runs folder, the avatars folder and the checkpoint's
    run are blocked outright."""
    app.queue(default_concurrency_limit=1, max_size=32)
    bound_upload_route(demo.server.gradio, demo.config.max_upload_files, demo.server.check_disk)
    blocked = [Path(demo.config.runs_dir), demo.avatars_dir, Path(demo.config.evaluate_dir)]
    if demo.meta is not None:
        blocked.append(Path(demo.meta.path).parent.parent)
    server = demo.server.root.resolve()
    blocked_paths = [str(b.resolve()) for b in blocked if not _inside(server, b.resolve())]
    return app.launch(
        server_name=host, server_port=port, max_file_size=f"{demo.config.max_file_mb}mb", allowed_paths=[],
        blocked_paths=blocked_paths, prevent_thread_lock=not block, show_error=False, ssr_mode=False, quiet=False,
    )


#: upload folder -> (files a request may carry, a check that raises ServerFull): the servers bound_upload_route bounds
_UPLOAD_BOUNDS: dict[Path, tuple[int, Callable[[], None]]] = {}


def bound_upload_route(upload_dir: Path, max_files: int, check: Callable[[], None]) -> None:
    """Bound Gradio's upload route (``POST /gradio_api/upload``) for a server whose uploads go to ``upload_dir``:
    at most ``max_files`` files a request, and none while ``check()`` raises ServerFull (its disk limit).  Gradio
    takes up to 1000 files a request and has no hook for it: its ``upload_fn`` looks up its multipart parser
    (``gradio.route_utils.GradioMultiPartParser``) at each request, so that name is given a subclass that applies
    these bounds to the servers registered here (others' uploads are parsed as before).  The parser's own error
    path answers 400 with the one line and removes the request's files."""
    from gradio import route_utils

    base = route_utils.GradioMultiPartParser
    if not getattr(base, "talkinghead_bounds", False):

        class BoundedParser(base):  # type: ignore[misc, valid-type]
            talkinghead_bounds = True

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                where = Path(str(self.upload_dir)).resolve() if self.upload_dir else None
                self.bounds = _UPLOAD_BOUNDS.get(where) if where else None
                if self.bounds:
                    self.max_files = min(self.max_files, self.bounds[0])

            def on_headers_finished(self) -> None:
                if self.bounds:
                    try:
                        self.bounds[1]()
                    except ServerFull as exc:
                        raise route_utils.MultiPartException(str(exc)) from None
                super().on_headers_finished()

        route_utils.GradioMultiPartParser = BoundedParser
    _UPLOAD_BOUNDS[Path(upload_dir).resolve()] = (int(max_files), check)


def _stop_on_sigterm() -> None:
    """SIGTERM (what service managers send) stops the server as Ctrl-C does, so that its folder is removed."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="talkinghead demo", description=__doc__.split("\n\n")[0] + " Serves on 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("--ckpt", default=None, help="meta-learned checkpoint (default: the newest runs/*/checkpoints/last.ckpt)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0: reachable from other machines)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--runs-dir", default="runs", help="where runs are listed and the newest checkpoint is looked for")
    p.add_argument("--avatars-dir", default=None, help="where avatars are saved (default: <runs-dir>/avatars)")
    p.add_argument("--detector", default="auto",
                   help="landmarks of uploads: auto | dlib | face-alignment | module:function (your own detector)")
    p.add_argument("--max-frames", type=int, default=300, help="frames used of an uploaded video (longer: sampled)")
    p.add_argument("--max-file-mb", type=int, default=50, help="upload size limit")
    p.add_argument("--max-side", type=int, default=0,
                   help="uploads are scaled down while decoding to this many pixels a side (0: 4 x the model's, >= 512)")
    p.add_argument("--max-megapixels", type=float, default=16.8, help="larger video frames or photos are refused")
    p.add_argument("--max-video-frames", type=int, default=3000, help="longer videos are refused")
    p.add_argument("--max-avatars", type=int, default=8, help="avatars per browser session (the oldest goes)")
    p.add_argument("--max-age-h", type=float, default=24.0, help="avatars older than this go")
    p.add_argument("--idle-min", type=float, default=15.0,
                   help="a session whose client shows no activity this long (page closed, client gone) is removed")
    p.add_argument("--max-sessions", type=int, default=16, help="sessions at once (a new one beyond: 'server is full')")
    p.add_argument("--max-disk-gb", type=float, default=10.0,
                   help="disk the sessions and uploads may take (beyond: no new session or upload)")
    p.add_argument("--upload-idle-min", type=float, default=10.0, help="uploads that no job used go after this")
    p.add_argument("--allow-keep", action="store_true",
                   help="offer 'Keep it on the server' (copies avatars into the avatars folder; off by default)")
    p.add_argument("--steps", type=int, default=0,
                   help="fine-tuning steps shown on the page (default 0: the model's recipe, as make finetune)")
    p.add_argument("--live-idle-s", type=float, default=10.0,
                   help="a Live tab that renders no frame this long frees the server's one live session")
    p.add_argument("--live-backend", default="auto", choices=["auto", "torch", "onnx"],
                   help="the Live tab's renderer (auto: onnx where an exported avatar.onnx is faster)")
    args = p.parse_args(argv)
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("error: the demo needs Gradio: pip install -e '.[demo]'", file=sys.stderr)
        return 2
    runs = Path(args.runs_dir)
    config = DemoConfig(
        ckpt=args.ckpt, runs_dir=runs, avatars_dir=Path(args.avatars_dir) if args.avatars_dir else runs / "avatars",
        evaluate_dir=runs / "evaluate", detector=args.detector, max_frames=args.max_frames,
        max_file_mb=args.max_file_mb, default_steps=args.steps, max_side=args.max_side,
        max_megapixels=args.max_megapixels, max_video_frames=args.max_video_frames, max_avatars=args.max_avatars,
        max_age_h=args.max_age_h, live_idle_s=args.live_idle_s, live_backend=args.live_backend,
        session_idle_s=60 * args.idle_min, max_sessions=args.max_sessions, max_disk_mb=1024 * args.max_disk_gb,
        upload_idle_s=60 * args.upload_idle_min, allow_keep=args.allow_keep,
    )
    try:
        demo = Demo(config)
    except TalkingHeadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if demo.meta is None:
        print(f"warning: {demo.model_error} (the page says so)", file=sys.stderr)
    for gone in demo.server.removed_leftovers:
        print(f"removed {gone}: left by a demo server that stopped without cleaning up", file=sys.stderr)
    print(f"files of this server's sessions: {demo.server.root} (removed when it stops)", file=sys.stderr)
    _stop_on_sigterm()
    try:
        launch(build_app(demo), demo, args.host, args.port, block=True)
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
