"""The page put together: :class:`Demo` (the server with every tab's handlers), :func:`build_app` (a banner, the
tabs' layouts, their events) and ``main`` (``talkinghead demo``'s options)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from talkinghead.demo import avatar_tab, drive_tab, live_tab, runs_tab
from talkinghead.demo.server import DemoConfig, launch, stop_on_sigterm, takes_request
from talkinghead.errors import TalkingHeadError


class Demo(avatar_tab.AvatarTab, drive_tab.DriveTab, live_tab.LiveTab, runs_tab.RunsTab):
    """The server side of the page: the model (loaded once), the server's folder, and one handler per button
    (each tab's module holds its own).

    Every file a session gets is one it uploaded or the page made for it, in its own folder
    (:mod:`talkinghead.sessions`); the Drive list is that session's avatars.  The held-out persons of the model's
    data are the model's and offered to everyone."""


def build_app(demo: Demo) -> Any:
    """The Gradio Blocks of the page (not launched): a banner, then one tab per job, each laid out by its module's
    ``layout``, then each tab's events (its ``wire``), the session's pings and its end."""
    import gradio as gr  # the page's own dependency (the demo extra): the CLI's other stages run without it

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
        tabs = SimpleNamespace(avatar=avatar_tab.layout(gr, demo), drive=drive_tab.layout(gr, demo),
                               live=live_tab.layout(gr, demo), runs=runs_tab.layout(gr, demo))
        avatar_tab.wire(gr, demo, tabs)
        drive_tab.wire(gr, demo, tabs, app)
        live_tab.wire(gr, demo, tabs, app)
        runs_tab.wire(gr, demo, tabs, app)

        def on_ping(request) -> None:
            demo.ping(request)

        def on_unload(request) -> None:
            demo.end_session(request)

        takes_request(gr, on_ping, on_unload)
        # an open page says so a few times per idle limit: its session stays; a client gone does not
        gr.Timer(max(1.0, min(60.0, cfg.session_idle_s / 3))).tick(on_ping, None, None, api_name=False, queue=False,
                                                                  show_progress="hidden")
        app.unload(on_unload)
    demo.app = app
    return app


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
    stop_on_sigterm()
    try:
        launch(build_app(demo), demo, args.host, args.port, block=True)
    except KeyboardInterrupt:
        pass
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
