"""``make demo``: a web page (Gradio) to make an avatar from photos or a video and drive it.

    make demo                                   # newest runs/*/checkpoints/last.ckpt, http://127.0.0.1:7860
    make demo CKPT=runs/x/checkpoints/last.ckpt ARGS="--host 0.0.0.0 --port 8080"

Tabs: **Avatar** (1-32 photos, a video, or a held-out person of the model's data -> chosen frames with their
landmarks, a progress bar while fine-tuning, FF beside FT on frames not used; the session's own, to download or
keep on the server), **Drive** (an avatar + an uploaded / webcam / held-out driver video -> driver | landmarks | avatar video and
the frames per second reached), **Live** (the webcam drives an avatar frame by frame: talkinghead.inference.live; one live
session per server), **Runs** (sample grids over iterations, loss curves, evaluation tables).

The page is a thin layer over :mod:`talkinghead.api`.  It reads only uploaded files and the model's own data by
id: no field names a server path.  Long work runs in Gradio's queue, one job at a time.  Each browser session
sees and is sent only what it uploaded or made, kept in a temporary folder of its own (talkinghead.sessions),
removed when the session ends, when its client shows no activity for 15 minutes, and when the server stops
(Ctrl-C or SIGTERM); nothing under runs/ is served.  Uploads are bounded by decoded size (DemoConfig), the upload
route in files a request and bytes a file, the sessions in number and disk (talkinghead.sessions.Limits).

Modules: ``server`` (what is served, sessions, uploads, serving), one per tab (``avatar_tab``, ``drive_tab``,
``live_tab``, ``runs_tab``: each its handlers, its ``layout`` and its ``wire``), ``app`` (the page put together,
``main``).
"""

from talkinghead.demo.app import Demo, build_app, main
from talkinghead.demo.avatar_tab import KEEP_OFF
from talkinghead.demo.live_tab import LIVE_FRAMES_KEPT, live_camera, read_live_frame
from talkinghead.demo.server import (
    MAX_PHOTOS, MAX_UPLOAD_FILES, NO_CHECKPOINT, DemoConfig, DemoError, bound_upload_route, checked_upload, launch,
    safe_child,
)

__all__ = [
    "KEEP_OFF", "LIVE_FRAMES_KEPT", "MAX_PHOTOS", "MAX_UPLOAD_FILES", "NO_CHECKPOINT", "Demo", "DemoConfig",
    "DemoError", "bound_upload_route", "build_app", "checked_upload", "launch", "live_camera", "main",
    "read_live_frame", "safe_child",
]
