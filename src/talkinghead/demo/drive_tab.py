"""The page's Drive tab: an avatar of this session and a driver (an uploaded or webcam video, or a held-out id of
the model's data) -> the clip ``api.drive`` renders (driver | landmarks | avatar, or the avatar's whole photo), with
the frames per second reached."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from data_modules.sources import VIDEO_SUFFIXES
from talkinghead import api, decode
from talkinghead.demo.server import DemoError, PageServer, drop_staged, error_line, takes_request
from talkinghead.errors import TalkingHeadError
from talkinghead.inference.reenact import DriveOptions


class DriveTab(PageServer):
    """The Drive tab's handler."""

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
            options = DriveOptions(adapt=adapt, full=bool(full), side_by_side=not full, backend=backend,
                                   max_frames=int(self.config.drive_frames), max_side=self.max_side)
            avatar = self.session_avatar(request, avatar_name)
            notes: list[str] = []
            sdir = self.session_dir(request)
            stamp = self.stamp()
            if video:
                driver = self.stage(request, video, VIDEO_SUFFIXES, "a video file", staged)
                limit, note = self.check_video(driver)
                notes += [note] if note else []
                options = DriveOptions.of(options, max_frames=limit or options.max_frames)
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
                clip = api.drive(avatar, driver_arg, out, options, meta=meta, detector=self.detector, progress=report)
        except TalkingHeadError as exc:
            self.failed(request, staged, video)
            return self.public(error_line(exc)), None, None
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            self.failed(request, staged, video)
            return self.public(error_line(exc, unexpected=True)), None, None
        drop_staged(staged)  # driven: the session's copy of the driver goes
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


def layout(gr: Any, demo: DriveTab) -> SimpleNamespace:
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


def wire(gr: Any, demo: DriveTab, tabs: SimpleNamespace, app: Any) -> None:
    """Drive; the session's avatars fill the list when the page opens (none in a new session)."""
    d = tabs.drive

    def on_drive(avatar, driver, driver_held, adapt, full, backend, request, progress=gr.Progress()):
        return demo.drive(avatar, driver, driver_held, adapt, full, backend, request=request, progress=progress)

    def on_load(request):
        return demo._avatar_choices(request)

    takes_request(gr, on_drive, on_load)
    d.go.click(on_drive, [d.avatar, d.driver, d.driver_held, d.adapt, d.full, d.backend],
               [d.drive_status, d.result, d.download], api_name="drive", concurrency_limit=1, concurrency_id="model")
    app.load(on_load, None, [d.avatar], api_name="avatars")
