"""The page's server side, below its tabs: what it serves (:class:`DemoConfig`), its folder and sessions
(:mod:`talkinghead.sessions`), uploads staged into a session, the safe-path checks, and serving (Gradio's queue and
the upload route's bounds).  Each tab's module (``avatar_tab``, ``drive_tab``, ``live_tab``, ``runs_tab``) adds its
handlers to :class:`PageServer`; ``app`` joins them into the page."""

from __future__ import annotations

import importlib
import itertools
import os
import re
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_modules.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES
from talkinghead import api, decode
from talkinghead.errors import TalkingHeadError
from talkinghead.sessions import Limits, ServerFolder, ServerFull, session_id

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls from the page's server

MAX_PHOTOS = 32
NO_CHECKPOINT = "no meta-learned checkpoint"
#: files one POST to Gradio's upload route may carry (MAX_PHOTOS photos and a margin); more: 400, nothing kept
MAX_UPLOAD_FILES = 40


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
    live_backend: str = "auto"  # the Live tab's renderer (talkinghead.inference.export.avatar_renderer)


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


# ------------------------------------------------------------------------------------------------ the server
class PageServer:
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
        return {sid for sid, _ in jobs}, {f for _, files in jobs for f in files}

    def failed(self, request: Any, staged: Sequence[Path], *uploads: Any) -> None:
        """A job failed: its uploads go at once (the session's copies, and the cache copies that no other
        session claimed and no other session's queued job names)."""
        sid = session_id(request)
        drop_staged(staged)
        others = {f for owner, files in self.queued() if owner != sid for f in files}
        self.server.drop_cached(sid, _file_paths(uploads), keep=others)

    def end_session(self, request: Any) -> None:
        if getattr(request, "session_hash", None):
            self.server.end_session(session_id(request))

    def sent(self, request: Any, *paths: Any) -> None:
        """Note files this session uploaded or is sent, so that their cache copies go when it ends."""
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
    def session_avatar(self, request: Any, avatar_name: str | None) -> Path:
        """This session's avatar file of that name, else :class:`DemoError`."""
        if not avatar_name:
            raise DemoError("make an avatar first")
        avatar = safe_child(self.session_avatars(request), str(avatar_name)) / "avatar.pt"
        if avatar.is_symlink() or not avatar.is_file():
            raise DemoError(f"no avatar named {avatar_name!r} in this session")
        return avatar

    def _avatar_choices(self, request: Any, value: str | None = None) -> Any:
        import gradio as gr

        names = self.saved_avatars(request)
        return gr.update(choices=names, value=value if value in names else (names[0] if names else None))


def drop_staged(staged: Sequence[Path]) -> None:
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


def error_line(exc: BaseException, unexpected: bool = False) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if unexpected:
        return f"**Error:** unexpected failure ({type(exc).__name__}: {first}); the server log has the details."
    return f"**Error:** {first}"


# ------------------------------------------------------------------------------------------------ live frames
#: a live frame's bounds, checked on the encoded frame before it is decoded: its bytes, and the pixels its


def takes_request(gr: Any, *handlers: Callable[..., Any]) -> None:
    """Gradio hands a handler the browser session (each session's own folder) when its ``request`` parameter is
    annotated with ``gr.Request``: the class itself, which ``from __future__ import annotations`` would leave a
    string."""
    for fn in handlers:
        fn.__annotations__["request"] = gr.Request


# ------------------------------------------------------------------------------------------------ serving
def launch(app: Any, demo: PageServer, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> Any:
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


def stop_on_sigterm() -> None:
    """SIGTERM (what service managers send) stops the server as Ctrl-C does, so that its folder is removed."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
