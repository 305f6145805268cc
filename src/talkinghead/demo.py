"""``make demo``: a web page (Gradio) to make an avatar from photos or a video and drive it.

    make demo                                   # newest runs/*/checkpoints/last.ckpt, http://127.0.0.1:7860
    make demo CKPT=runs/x/checkpoints/last.ckpt ARGS="--host 0.0.0.0 --port 8080"

Tabs: **Avatar** (1-32 photos, a video, or a held-out person of the model's data -> chosen frames with their
landmarks, a progress bar while fine-tuning, FF beside FT on frames not used; saved as ``make finetune`` saves
it), **Drive** (an avatar + an uploaded / webcam / held-out driver video -> driver | landmarks | avatar video and
the frames per second reached), **Runs** (sample grids over iterations, loss curves, evaluation tables).

The page is a thin layer over :mod:`talkinghead.api`.  It reads only uploaded files and the model's own data by
id: no field names a server path.  Long work runs in Gradio's queue, one job at a time; each browser session's
files live in a temporary folder of its own, removed when the session ends.
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from talkinghead.errors import TalkingHeadError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls from the page's server

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm")
MAX_PHOTOS = 32
NO_CHECKPOINT = "no meta-learned checkpoint"


class DemoError(TalkingHeadError, ValueError):
    """Input the page refuses (a path outside the allowed folders, too many photos, ...)."""


@dataclass
class DemoConfig:
    """What ``make demo`` serves: the model, where avatars are saved, limits."""

    ckpt: str | None = None
    runs_dir: Path = Path("runs")
    avatars_dir: Path = Path("runs/avatars")
    evaluate_dir: Path = Path("runs/evaluate")
    detector: Any = "auto"
    max_frames: int = 300  # frames decoded from an upload; longer videos are sampled evenly
    max_file_mb: int = 50
    drive_frames: int = 0  # driver frames rendered (0 = all, up to max_frames)
    session_root: Path | None = None  # per-session folders go under it (default: a fresh temporary folder)
    default_epochs: float = 40.0
    extra_notes: list[str] = field(default_factory=list)


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

    from talkinghead.landmarks.draw import draw_landmarks
    from talkinghead.visualize import to_uint8

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

    from talkinghead.visualize import to_uint8

    return [cv2.resize(i, (scale_to, scale_to), interpolation=cv2.INTER_NEAREST) for i in to_uint8(images)]


# ------------------------------------------------------------------------------------------------ the app state
class Demo:
    """The server side of the page: the model (loaded once), folders, and one handler per button."""

    def __init__(self, config: DemoConfig) -> None:
        from talkinghead import api

        self.config = config
        self._jobs = itertools.count(1)  # names files uniquely: two jobs of one session within a second
        self.avatars_dir = Path(config.avatars_dir)
        self.detector = load_detector(config.detector)
        root = config.session_root or Path(tempfile.mkdtemp(prefix="talkinghead-demo-"))
        self.session_root = Path(root)
        self.session_root.mkdir(parents=True, exist_ok=True)
        self.meta = None
        self.model_error = ""
        self.held_out: list[str] = []
        try:
            self.meta = api.load_model(config.ckpt, config.runs_dir)
            self.held_out = api.held_out_ids(self.meta)
        except TalkingHeadError as exc:
            self.model_error = (
                f"{NO_CHECKPOINT}: {exc} — meta-learn one with `make meta-learn`, or start with "
                f"`make demo CKPT=...`" if "checkpoint" in str(exc).lower() else str(exc)
            )

    # -------------------------------------------------------------------------------------------- helpers
    def session_dir(self, request: Any) -> Path:
        sid = re.sub(r"[^A-Za-z0-9_-]", "", str(getattr(request, "session_hash", "") or "local"))[:32] or "local"
        d = self.session_root / sid
        d.mkdir(parents=True, exist_ok=True)
        return d

    def end_session(self, request: Any) -> None:
        sid = re.sub(r"[^A-Za-z0-9_-]", "", str(getattr(request, "session_hash", "") or ""))[:32]
        if sid:
            shutil.rmtree(self.session_root / sid, ignore_errors=True)

    def upload_roots(self, request: Any) -> list[Path]:
        roots = [self.session_dir(request)]
        gradio_tmp = os.environ.get("GRADIO_TEMP_DIR") or str(Path(tempfile.gettempdir()) / "gradio")
        roots.append(Path(gradio_tmp))
        return roots

    def public(self, message: str) -> str:
        """``message`` without the server's folders: the page names uploads as the user knows them."""
        root = re.escape(str(self.session_root))
        message = re.sub(root + r"/[^/\s]+/photos_\d+", "your photos", message)
        message = re.sub(root + r"/[^/\s]+/source_\d+\.\w+", "your video", message)
        message = re.sub(root + r"/[^/\s]+/driver_\d+\.\w+", "the driver video", message)
        message = re.sub(root + r"[^\s:,;]*", "your upload", message)
        return message.replace(str(self.avatars_dir.resolve()) + "/", "").replace(str(self.avatars_dir) + "/", "")

    def require_model(self) -> Any:
        if self.meta is None:
            raise DemoError(self.model_error or NO_CHECKPOINT)
        return self.meta

    def saved_avatars(self) -> list[str]:
        from talkinghead import api

        return [p.parent.name for p in api.list_avatars(self.avatars_dir)]

    def frame_limit_note(self, video: Path) -> tuple[int, str]:
        from talkinghead import api

        total, _ = api.frames_of(video)
        limit = int(self.config.max_frames)
        if total > limit:
            return limit, f"The video has {total} frames: {limit} of them, evenly spaced, were used (the page's limit)."
        return 0, ""

    def stamp(self) -> str:
        """A file-name stamp unique to this server: time of day and a job number."""
        return f"{time.strftime('%H%M%S')}_{next(self._jobs)}"

    def stage_source(self, request: Any, video: Any, photos: Any, held_out: str | None) -> tuple[str, str, list[str]]:
        """The source for ``api.make_avatar`` (a session-folder path or a held-out id), its name, and notes."""
        roots = self.upload_roots(request)
        sdir = self.session_dir(request)
        stamp = self.stamp()
        if video:
            src = checked_upload(video, roots)
            if src.suffix.lower() not in VIDEO_SUFFIXES:
                raise DemoError(f"{src.name}: not a video file ({', '.join(VIDEO_SUFFIXES)})")
            self.check_size(src)
            dst = sdir / f"source_{stamp}{src.suffix.lower()}"
            shutil.copyfile(src, dst)
            return str(dst), _stem(src.name), []
        if photos:
            files = photos if isinstance(photos, list) else [photos]
            files = [getattr(f, "name", f) for f in files]
            if len(files) > MAX_PHOTOS:
                raise DemoError(f"{len(files)} photos: give at most {MAX_PHOTOS}")
            folder = sdir / f"photos_{stamp}"
            folder.mkdir()
            for i, f in enumerate(files):
                src = checked_upload(f, roots)
                if src.suffix.lower() not in IMAGE_SUFFIXES:
                    raise DemoError(f"{src.name}: not an image ({', '.join(IMAGE_SUFFIXES)})")
                self.check_size(src)
                shutil.copyfile(src, folder / f"{i:03d}{src.suffix.lower()}")
            return str(folder), _stem(Path(str(files[0])).name), []
        if held_out:
            if held_out not in self.held_out:
                raise DemoError(f"refused {held_out!r}: not a held-out video id of the model's data")
            return held_out, held_out, []
        raise DemoError("give 1-32 photos, a video, or pick a held-out person")

    def check_size(self, path: Path) -> None:
        mb = path.stat().st_size / 2**20
        if mb > self.config.max_file_mb:
            raise DemoError(f"{path.name} is {mb:.0f} MB: the page takes files up to {self.config.max_file_mb} MB")

    # -------------------------------------------------------------------------------------------- handlers
    def make_avatar(
        self, video: Any, photos: Any, held_out: str | None, T: float, mode: str, epochs: float,
        request: Any = None, progress: Callable[..., Any] | None = None,
    ) -> tuple[str, list[Any], list[Any], str | None, Any]:
        """-> (status markdown, chosen frames with landmarks, FF | FT | real gallery, preview video, avatar list)"""
        from talkinghead import api
        from talkinghead.fewshot import FineTuneSettings

        try:
            meta = self.require_model()
            if mode not in ("FT", "FF"):
                raise DemoError(f"mode must be FT or FF, got {mode!r}")
            source, name, notes = self.stage_source(request, video, photos, held_out)
            max_frames = 0
            if Path(source).suffix.lower() in VIDEO_SUFFIXES:
                max_frames, note = self.frame_limit_note(Path(source))
                notes += [note] if note else []
            T = int(T)
            epochs = float(epochs)
            if epochs <= 0:
                raise DemoError("epochs must be > 0 (or choose FF)")
            sid = self.session_dir(request).name[:8]
            out = self.avatars_dir / f"demo-{sid}-{api.slug(name)}_T{T}_{mode}" / "avatar.pt"

            def report(fraction: float, message: str) -> None:
                if progress is not None:
                    progress(fraction, desc=message)

            made = api.make_avatar(
                source, T=T, mode=mode, meta=meta, out=out, detector=self.detector, max_frames=max_frames,
                settings=FineTuneSettings(epochs=epochs), progress=report,
            )
        except TalkingHeadError as exc:
            return self.public(_error(exc)), [], [], None, self._avatar_choices()
        except Exception as exc:  # noqa: BLE001 - the page shows one line; the server log keeps the trace
            traceback.print_exc()
            return self.public(_error(exc, unexpected=True)), [], [], None, self._avatar_choices()
        chosen = [
            (img, f"frame {i + 1}")
            for i, img in enumerate(landmarks_over(made.shots["frames"], made.shots["landmarks"]))
        ]
        pv = made.preview
        compare: list[tuple[np.ndarray, str]] = []
        for i in range(min(4, pv["fake"].shape[0])):
            if "ff" in pv:
                compare.append((enlarge(pv["ff"][i : i + 1])[0], f"FF {i + 1}"))
            compare.append((enlarge(pv["fake"][i : i + 1])[0], f"{mode} {i + 1}"))
            compare.append((enlarge(pv["frames"][i : i + 1])[0], f"real {i + 1}"))
        where = "frames the avatar was not made from" if made.preview_unseen else "its own T frames (no other frame)"
        av = made.avatar
        lines = [
            f"**Avatar `{made.path.parent.name}`** saved ({av.mode}, T={av.T}, {av.steps} fine-tuning steps, "
            f"{made.fitted.seconds:.1f} s). L1 on its T frames: {made.fitted.l1_before:.3f} (FF) → "
            f"{made.fitted.l1_after:.3f}.",
            f"Comparison on {where}: " + ("FF | FT | real" if "ff" in pv else "FF | real") + ".",
            f"`make reenact AVATAR={made.path} DRIVER=...` drives it from the command line.",
            *notes, *made.notes,
        ]
        return "\n\n".join(lines), chosen, compare, str(made.video_path), self._avatar_choices(made.path.parent.name)

    def drive(
        self, avatar_name: str | None, video: Any, held_out: str | None, adapt: str,
        request: Any = None, progress: Callable[..., Any] | None = None,
    ) -> tuple[str, str | None, str | None]:
        """-> (status markdown, result video, download file)"""
        from talkinghead import api

        try:
            meta = self.require_model()
            if not avatar_name:
                raise DemoError("make an avatar first, or pick a saved one")
            avatar = safe_child(self.avatars_dir, str(avatar_name)) / "avatar.pt"
            if avatar.is_symlink() or not avatar.is_file():
                raise DemoError(f"no avatar named {avatar_name!r}")
            if adapt not in ("auto", "on", "off"):
                raise DemoError(f"adaptation must be auto, on or off, got {adapt!r}")
            notes: list[str] = []
            sdir = self.session_dir(request)
            stamp = self.stamp()
            max_frames = int(self.config.drive_frames)
            if video:
                src = checked_upload(video, self.upload_roots(request))
                if src.suffix.lower() not in VIDEO_SUFFIXES:
                    raise DemoError(f"{src.name}: not a video file ({', '.join(VIDEO_SUFFIXES)})")
                self.check_size(src)
                driver = sdir / f"driver_{stamp}{src.suffix.lower()}"
                shutil.copyfile(src, driver)
                limit, note = self.frame_limit_note(driver)
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
            clip = api.drive(
                avatar, driver_arg, out, side_by_side=True, adapt=adapt, meta=meta, detector=self.detector,
                max_frames=max_frames, progress=report,
            )
        except TalkingHeadError as exc:
            return self.public(_error(exc)), None, None
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            return self.public(_error(exc, unexpected=True)), None, None
        mode = "adapted to the avatar's face shape" if clip.adapted else "raw driver landmarks"
        lines = [
            f"**{clip.frames} frames** (driver | landmarks | avatar), {mode}: **{clip.fps:.1f} frames/s** rendered "
            f"and encoded; first frame {clip.first_frame_s:.1f} s after the click, {clip.seconds:.1f} s in all.",
            *notes, *clip.notes,
        ]
        return "\n\n".join(lines), str(clip.path), str(clip.path)

    def runs(self) -> list[str]:
        from talkinghead import api

        return [r.name for r in api.list_runs(self.config.runs_dir)]

    def show_run(self, name: str | None) -> tuple[str, list[Any], Any]:
        """-> (status markdown, sample grids over iterations, loss curves as a long table)"""
        import pandas as pd

        from talkinghead import api

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
            grids = [(str(p), f"iteration {i}") for i, p in run.samples]
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
        from talkinghead import api

        found = api.list_evaluations(self.config.evaluate_dir)
        if not found:
            return "No evaluation yet: `make evaluate` writes its tables here.", []
        text = "\n\n".join(f"### {e.name}\n\n{e.table}" for e in found[:5])
        return text, [(str(e.examples), e.name) for e in found[:5] if e.examples]

    def _avatar_choices(self, value: str | None = None) -> Any:
        import gradio as gr

        names = self.saved_avatars()
        return gr.update(choices=names, value=value if value in names else (names[0] if names else None))


def _stem(name: str) -> str:
    return Path(name).stem or "upload"


def _error(exc: BaseException, unexpected: bool = False) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if unexpected:
        return f"**Error:** unexpected failure ({type(exc).__name__}: {first}); the server log has the details."
    return f"**Error:** {first}"


# ------------------------------------------------------------------------------------------------ the page
def build_app(demo: Demo) -> Any:
    """The Gradio Blocks of the page (not launched)."""
    import gradio as gr

    cfg = demo.config
    banner = (
        f"**Model:** `{Path(demo.meta.path).parent.parent.name}/{Path(demo.meta.path).name}` "
        f"({demo.meta.image_size}² px)" if demo.meta is not None
        else f"**Error:** {demo.model_error}"
    )
    with gr.Blocks(title="talkinghead demo", analytics_enabled=False) as app:
        gr.Markdown(
            "# talkinghead — few-shot talking heads\n"
            "Make an avatar of a person from a few photos or a video (Zakharov et al. 2019, Sec. 3.4), then drive "
            "it with another video's facial landmarks.\n\n" + banner,
            elem_id="banner",
        )
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
                    epochs = gr.Number(value=cfg.default_epochs, minimum=1, maximum=400,
                                       label="fine-tuning epochs over the T frames (FT; make finetune: 560 steps, FSTH)")
                    make = gr.Button("Make avatar", variant="primary", elem_id="make-avatar")
            avatar_status = gr.Markdown(elem_id="avatar-status")
            chosen = gr.Gallery(label="Chosen frames with their detected landmarks", columns=8, height="auto",
                                elem_id="chosen-frames")
            compare = gr.Gallery(label="FF | FT | real, on frames the avatar was not made from", columns=6,
                                 height="auto", elem_id="compare")
            preview = gr.Video(label="Preview: real | landmarks | avatar", interactive=False, elem_id="preview")
        with gr.Tab("Drive"):
            with gr.Row():
                with gr.Column():
                    names = demo.saved_avatars()
                    avatar = gr.Dropdown(choices=names, value=names[0] if names else None,
                                         label="Avatar (made in this page or saved earlier)", elem_id="drive-avatar")
                    driver = gr.Video(label="Driver: upload a video or record one with the webcam",
                                      sources=["upload", "webcam"], height=240, elem_id="driver-video")
                    driver_held = gr.Dropdown(choices=[""] + demo.held_out, value="",
                                              label="…or a held-out video of the model's data", elem_id="driver-heldout")
                    adapt = gr.Radio(["auto", "on", "off"], value="auto",
                                     label="Landmark adaptation: on keeps the avatar's face shape and moves it as the "
                                           "driver moves; off uses the driver's raw landmarks (the paper)")
                    go = gr.Button("Drive", variant="primary", elem_id="drive")
                with gr.Column():
                    drive_status = gr.Markdown(elem_id="drive-status")
                    result = gr.Video(label="driver | landmarks | avatar", interactive=False, autoplay=True,
                                      loop=True, height=260, elem_id="result-video")
                    download = gr.File(label="Download the mp4", interactive=False, elem_id="result-file")
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

        def on_make(video, photos, held, T, mode, epochs, request: gr.Request, progress=gr.Progress()):
            return demo.make_avatar(video, photos, held, T, mode, epochs, request=request, progress=progress)

        def on_drive(avatar, driver, driver_held, adapt, request: gr.Request, progress=gr.Progress()):
            return demo.drive(avatar, driver, driver_held, adapt, request=request, progress=progress)

        # the page's handlers get the browser session (per-session folders): annotations must be real classes
        for fn in (on_make, on_drive):
            fn.__annotations__["request"] = gr.Request

        def on_unload(request: gr.Request) -> None:
            demo.end_session(request)

        on_unload.__annotations__["request"] = gr.Request

        make.click(on_make, [video, photos, held, T, mode, epochs], [avatar_status, chosen, compare, preview, avatar],
                   api_name="make_avatar", concurrency_limit=1, concurrency_id="model")
        go.click(on_drive, [avatar, driver, driver_held, adapt], [drive_status, result, download],
                 api_name="drive", concurrency_limit=1, concurrency_id="model")

        def on_refresh(name):
            runs = demo.runs()
            name = name if name in runs else (runs[0] if runs else None)
            status, g, df = demo.show_run(name)
            text, ex = demo.evaluations()
            return gr.update(choices=runs, value=name), status, g, df, text, ex

        refresh.click(on_refresh, [run], [run, run_status, grids, curves, eval_text, eval_examples], api_name="runs")
        run.change(lambda n: demo.show_run(n), [run], [run_status, grids, curves], api_name="show_run")
        app.load(on_refresh, [run], [run, run_status, grids, curves, eval_text, eval_examples], api_name=False)
        app.unload(on_unload)
    return app


def launch(app: Any, demo: Demo, host: str = "127.0.0.1", port: int = 7860, block: bool = True) -> Any:
    """Serve ``app`` (Gradio's queue: long work waits its turn)."""
    app.queue(default_concurrency_limit=1, max_size=32)
    allowed = [str(Path(demo.config.runs_dir).resolve()), str(demo.avatars_dir.resolve()),
               str(Path(demo.config.evaluate_dir).resolve()), str(demo.session_root.resolve())]
    return app.launch(
        server_name=host, server_port=port, max_file_size=f"{demo.config.max_file_mb}mb", allowed_paths=allowed,
        prevent_thread_lock=not block, show_error=False, ssr_mode=False, quiet=False,
    )


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
    p.add_argument("--epochs", type=float, default=40.0, help="default fine-tuning epochs shown on the page")
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
        max_file_mb=args.max_file_mb, default_epochs=args.epochs,
    )
    try:
        demo = Demo(config)
    except TalkingHeadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if demo.meta is None:
        print(f"warning: {demo.model_error} (the page says so)", file=sys.stderr)
    try:
        launch(build_app(demo), demo, args.host, args.port, block=True)
    finally:
        shutil.rmtree(demo.session_root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
