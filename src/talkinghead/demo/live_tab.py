"""The page's Live tab: the webcam drives an avatar of this session frame by frame (``talkinghead.inference.live``), one live
session per server; frames the server has no time for are dropped, never queued."""

from __future__ import annotations

import base64
import binascii
import collections
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from talkinghead import decode
from talkinghead.demo.server import DemoConfig, PageServer, error_line, takes_request
from talkinghead.errors import TalkingHeadError
from talkinghead.inference.live import WAIT_MESSAGE, LiveLock, LiveSession
from talkinghead.inference.reenact import DriveOptions
from talkinghead.sessions import session_id
from talkinghead.inference.shots import make_landmark_detector

#: live frames kept in Gradio's cache per live session (about 1.5 s at 20 frames/s: the page has fetched them by then)
LIVE_FRAMES_KEPT = 32


class LiveTab(PageServer):
    """The Live tab's handlers: one webcam frame, the end of a stream; the server's one live slot."""

    def __init__(self, config: DemoConfig) -> None:
        self._live_setup(config)  # before the server's sweeper starts: it asks pending(), which reads the live files
        super().__init__(config)

    def _live_setup(self, config: DemoConfig) -> None:
        self.live_lock = LiveLock(config.live_idle_s)
        self._live: tuple[str, Path, Any] | None = None  # (owner session, avatar file, LiveSession)
        self._live_guard = threading.Lock()
        self._live_detector: Any = None
        self._live_files: collections.deque[Path] = collections.deque()  # cache folders of the shown live frames

    def _live_image(self, frame: np.ndarray) -> str:
        """``frame`` (S, S, 3) as a JPEG in Gradio's cache, where the page fetches it from; only the newest
        :data:`LIVE_FRAMES_KEPT` stay on disk (a live stream would otherwise leave one file a frame, for a day)."""
        from gradio.processing_utils import save_img_array_to_cache  # the demo extra's: imported where used

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
            return None, self.public(error_line(frame))
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
                        self._live_detector = (make_landmark_detector(self.detector, "track")
                                               if isinstance(self.detector, str) else self.detector)
                    self._live = (owner, avatar, LiveSession.from_file(
                        avatar, meta, self._live_detector, DriveOptions(backend=self.config.live_backend),
                        interval_s=self.config.live_every))
                live = self._live[2]
                rendered = live.counts.rendered
                out = live.process(frame, arrived)
                if live.counts.rendered > rendered:  # only a rendered frame keeps the slot (not a skipped one)
                    self.live_lock.touch(owner)
                return (None if out is None else self._live_image(out)), live.stats.markdown()
        except TalkingHeadError as exc:
            self.live_lock.release(owner)
            return None, self.public(error_line(exc))
        except Exception as exc:  # noqa: BLE001 - the page shows one line; the server log keeps the trace
            traceback.print_exc()
            self.live_lock.release(owner)
            return None, self.public(error_line(exc, unexpected=True))

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

    def pending(self) -> tuple[set[str], set[str]]:
        """The server's pending work, and the live frames on show."""
        sessions, files = super().pending()
        return sessions, files | {str(f) for f in list(self._live_files)}

    def end_session(self, request: Any) -> None:
        if getattr(request, "session_hash", None):
            self.live_stop(request)
        super().end_session(request)


LIVE_BOUNDS = decode.Bounds(max_pixels=4096 * 4096, max_encoded=16 * 10**6)


def read_live_frame(payload: Any, bounds: decode.Bounds = LIVE_BOUNDS) -> np.ndarray | TalkingHeadError | None:
    """A live frame as Gradio receives it (an uploaded file, or a ``data:`` URL) -> uint8 (H, W, 3) RGB, or the
    one-line error (returned, not raised: the stream goes on) when it is over a bound or no image; its size is
    checked on the encoded bytes and the header before any pixel is decoded."""
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


def layout(gr: Any, demo: LiveTab) -> SimpleNamespace:
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


def wire(gr: Any, demo: LiveTab, tabs: SimpleNamespace, app: Any) -> None:
    """The webcam stream.  Each webcam frame is one step of one stream event; frames that arrive while the server
    is busy replace the one waiting (Gradio keeps the latest input of a stream), and the page sends none while its
    last is pending: frames are dropped, never queued."""
    live = tabs.live

    def on_live(frame, name, request):
        return demo.live_frame(frame, name, request=request)

    def on_live_stop(request):
        return demo.live_stop(request)

    def on_live_avatars(name, request):
        return demo._avatar_choices(request, name)

    takes_request(gr, on_live, on_live_stop, on_live_avatars)
    live.tab.select(on_live_avatars, [live.live_avatar], [live.live_avatar], api_name=False)
    app.load(on_live_avatars, [live.live_avatar], [live.live_avatar], api_name=False)
    live.camera.stream(on_live, [live.camera, live.live_avatar], [live.live_out, live.live_status], api_name="live",
                       stream_every=demo.config.live_every, time_limit=demo.config.live_time_limit,
                       concurrency_limit=4, concurrency_id="live", show_progress="hidden").then(
        on_live_stop, None, [live.live_status], api_name=False)
