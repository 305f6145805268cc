"""The page's Avatar tab: a person's video, 1-32 photos or a held-out id -> an avatar (``api.make_avatar``), with
its chosen frames and their landmarks, FF beside FT on frames not used, a preview, and the avatar file to download,
keep on the server (``--allow-keep``) or export as one ONNX file (``api.export_avatar``)."""

from __future__ import annotations

import shutil
import traceback
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
from PIL import Image

from data_modules.sources import IMAGE_SUFFIXES
from talkinghead import api, decode
from talkinghead.demo.server import MAX_PHOTOS, DemoError, PageServer, drop_staged, error_line, takes_request
from talkinghead.errors import TalkingHeadError
from talkinghead.inference.export import default_out
from talkinghead.inference.fewshot import settings_for
from talkinghead.landmarks.draw import draw_landmarks
from talkinghead.sessions import free_name, prune_avatars
from talkinghead.visualize import to_uint8

KEEP_OFF = ("keeping avatars on the server is off here (the server's operator turns it on with "
            "`make demo ARGS=--allow-keep`): download avatar.pt instead")


class AvatarTab(PageServer):
    """The Avatar tab's handlers: make an avatar, keep it on the server, export it."""

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
            return self.public(error_line(exc)), [], [], None, self._avatar_choices(request), None
        except Exception as exc:  # noqa: BLE001 - the page shows one line; the server log keeps the trace
            traceback.print_exc()
            self.failed(request, staged, video, photos)
            return self.public(error_line(exc, unexpected=True)), [], [], None, self._avatar_choices(request), None
        drop_staged(staged)  # the avatar is made: the session's copy of its input goes
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
            return self.public(error_line(exc))
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
            return self.public(error_line(exc)), None
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            return self.public(error_line(exc, unexpected=True)), None
        self.sent(request, out)
        return " ".join(lines), str(out)


def landmarks_over(frames: Any, landmarks: Any, scale_to: int = 256) -> list[np.ndarray]:
    """(N, 3, S, S) frames in [-1, 1] + (N, 68, 2) pixel landmarks -> N uint8 images with the landmarks drawn
    over them, enlarged to ``scale_to`` for viewing."""
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
    return [cv2.resize(i, (scale_to, scale_to), interpolation=cv2.INTER_NEAREST) for i in to_uint8(images)]


def _png(image: np.ndarray, path: Path) -> str:
    """Write a uint8 image as PNG (the page sends files of the session's folder, nothing else)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return str(path)


def layout(gr: Any, demo: AvatarTab) -> SimpleNamespace:
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


def wire(gr: Any, demo: AvatarTab, tabs: SimpleNamespace) -> None:
    """Make, keep and export; a new avatar is selected in the Drive tab's list, whose avatar keep and export take."""
    a, d = tabs.avatar, tabs.drive

    def on_make(video, photos, held, T, mode, steps, request, progress=gr.Progress()):
        return demo.make_avatar(video, photos, held, T, mode, steps, request=request, progress=progress)

    def on_keep(avatar, request):
        return demo.keep(avatar, request=request)

    def on_export(avatar, request):
        return demo.export_onnx(avatar, request=request)

    takes_request(gr, on_make, on_keep, on_export)
    made = [a.avatar_status, a.chosen, a.compare, a.preview, d.avatar, a.avatar_file]
    a.make.click(on_make, [a.video, a.photos, a.held, a.T, a.mode, a.steps], made,
                 api_name="make_avatar", concurrency_limit=1, concurrency_id="model")
    a.keep.click(on_keep, [d.avatar], [a.keep_status], api_name="keep")
    a.export.click(on_export, [d.avatar], [a.export_status, a.onnx_file], api_name="export",
                   concurrency_limit=1, concurrency_id="model")
