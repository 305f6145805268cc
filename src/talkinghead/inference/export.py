"""Export an avatar as one ONNX file: a standalone renderer, landmark images -> frames, that runs with onnxruntime
alone (``make export``), and the onnxruntime backend of reenactment (``--backend onnx``).

After fine-tuning ψ' is fixed, so the avatar is a function of the landmark image only: the generator folds ψ' in
itself (``folded``, the model interface of ``talkinghead.nets.interface``; for the paper's generator every AdaIN
becomes a fixed affine instance norm, ``talkinghead.nets.folding``), and the embedder, the projection P and the
discriminator drop out.  :class:`FoldedRenderer` is that network in the file's precision.

It is exported with PyTorch's ``torch.export``-based ONNX exporter (``torch.onnx.export(..., dynamo=True)``, which
needs ``onnxscript``).  The TorchScript exporter (``dynamo=False``, deprecated) was tried and rejected: it loses the
channel count after the up-convolutions' reshapes and refuses the following instance norm.  Two of the paper
generator's layers are re-expressed for the exporter with the same maths (tested): :class:`OnnxUpConv` interleaves the four
phases of ``UpConv`` with one stack + reshape instead of four strided writes, and :class:`OnnxSelfAttention` writes
SAGAN's attention as two matmuls (the exporter's ``scaled_dot_product_attention`` takes 4-D inputs only).

The file: input ``landmarks`` float32 (N, 3, S, S), RGB in [-1, 1] (uint8 / 127.5 - 1); output ``frames`` float32
(N, 3, S, S) in [-1, 1]; N dynamic, S fixed.  ``fp16``: weights and activations in half precision (instance norms in
fp32), input and output still float32.  Its metadata (``custom_metadata_map`` in onnxruntime) records the format,
the model and avatar fingerprints, the image size, the precision, the error against PyTorch measured at export, and
``landmark_drawing``: the parts, colours and line width of ``talkinghead.landmarks.draw`` as JSON, enough to draw
the input without this project (README: Export).

Before the file is renamed into place, onnxruntime runs it on landmark images of the avatar and its frames are
compared with the PyTorch renderer's (fp32, plain path): further than :data:`TOLERANCE` apart -> no file, an error.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from talkinghead import __version__
from talkinghead.inference.avatar import (
    Avatar,
    AvatarRenderer,
    MetaLearned,
    avatar_generator,
    hash_tensors,
    load_avatar,
    load_meta_learned,
    resolve_checkpoint,
)
from talkinghead.errors import TalkingHeadError
from talkinghead.files import atomic_path
from talkinghead.landmarks.draw import _SHIFT, IRIS_COLOUR, PART_COLOURS, PARTS, landmark_image_tensor, line_width_for
from talkinghead.landmarks.sets import IBUG68_IRIS, IRIS_ROWS, check_set
from talkinghead.nets.folding import FoldedAdaIN, OnnxSelfAttention, OnnxUpConv  # re-exported (__all__)
from talkinghead.inference.render import AvatarFrames, FrameRenderer
from talkinghead.speed import Speed

FORMAT = "talkinghead-onnx/1"
PRECISIONS = ("fp32", "fp16")
#: (max, mean) |ONNX - PyTorch fp32| over the check's frames (in [-1, 1]) an export must meet, per precision.  A
#: gross-error check (a wrong fold is off by 0.1 and more): at 256² torch's own two fp32 paths (contiguous /
#: channels-last) already differ by up to 9e-3 on random paper-width weights, where the instance norms of the
#: mostly black landmark image amplify rounding; tests/test_export.py holds the tiny test avatar to 1e-4 (fp32).
TOLERANCE = {"fp32": (1e-2, 1e-3), "fp16": (1e-1, 1e-2)}
OPSET = 18
BACKENDS = ("torch", "onnx", "auto")
INPUT, OUTPUT = "landmarks", "frames"


class ExportError(TalkingHeadError, ValueError):
    """An export that cannot be made or an ONNX file that cannot be used (the message says why)."""


class MissingPackageError(TalkingHeadError, ImportError):
    """An optional package that export or the onnx backend needs is not installed."""


def require(package: str) -> Any:
    """``import package``, or a one-line :class:`MissingPackageError` saying how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise MissingPackageError(
            f"{package} is not installed: pip install {package} (or pip install -e '.[export]')"
        ) from exc


def _installed(package: str) -> bool:
    try:
        importlib.import_module(package)
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------------ the network
class FoldedRenderer(nn.Module):
    """The avatar as one network: ``forward(landmark images (N, 3, S, S) float32 in [-1, 1]) -> frames (N, 3, S, S)
    float32 in [-1, 1]``: the generator's ``folded(ψ')`` (the model interface, ``talkinghead.nets.interface``) in
    ``dtype``, float32 or float16 (weights and activations; I/O stay float32).
    """

    def __init__(self, generator: nn.Module, psi: torch.Tensor, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        net = generator.folded(psi.detach().float().reshape(-1))
        self.generator = net.to(dtype).eval().requires_grad_(False)
        self.dtype = dtype
        self.image_size = int(net.image_size)

    def forward(self, landmarks: torch.Tensor) -> torch.Tensor:
        return self.generator(landmarks.to(self.dtype)).float()


# ------------------------------------------------------------------------------------------------ metadata
def avatar_fingerprint(avatar: Avatar) -> str:
    """sha256 over ψ', the fine-tuned generator tensors and the model fingerprint: which avatar a file renders."""
    h = hashlib.sha256(avatar.fingerprint.encode())
    return hash_tensors(h, [("psi", avatar.psi), *sorted(avatar.generator_delta.items())]).hexdigest()[:16]


def landmark_drawing(size: int, landmark_set: str = "ibug68") -> dict[str, Any]:
    """``talkinghead.landmarks.draw.draw_landmarks`` at ``size`` as data: what the file's input must look like.

    ``landmark_set``: the avatar's (``talkinghead.landmarks.sets``); ``ibug68+iris`` adds how the irises are drawn."""
    drawing = {
        "drawn_by": "talkinghead.landmarks.draw.draw_landmarks (cv2.polylines per part, anti-aliased)",
        "points": "68 iBUG landmarks (x, y) in pixels of the S x S face crop; integer coordinates are pixel centres",
        "background": [0, 0, 0],
        "line_width": line_width_for(size),
        "line_type": "cv2.LINE_AA",
        "shift": _SHIFT,
        "parts": [{"name": name, "points": list(idx), "closed": closed, "colour": list(PART_COLOURS[name])}
                  for name, (idx, closed) in PARTS.items()],
        "to_input": "RGB uint8 (S, S, 3) -> transpose to (3, S, S) -> float32 / 127.5 - 1; batch on axis 0",
        "landmark_set": check_set(landmark_set),
    }
    if landmark_set == IBUG68_IRIS:
        drawing["points"] = ("72 points (x, y) in pixels of the S x S face crop: the 68 iBUG landmarks, then per eye "
                             "(right = points 36-41, then left) the iris centre and a point on its rim; an absent iris "
                             "(closed eye) is NaN and not drawn")
        drawing["irises"] = {
            "rows": {eye: list(rows) for eye, rows in IRIS_ROWS.items()},
            "colour": list(IRIS_COLOUR),
            "drawn": "first, under the lines: cv2.circle filled (thickness -1), anti-aliased, radius = the "
                     "centre-to-rim distance, same shift",
        }
    return drawing


def file_metadata(avatar: Avatar, precision: str) -> dict[str, str]:
    s = avatar.image_size
    return {
        "format": FORMAT,
        "model_fingerprint": avatar.fingerprint,
        "avatar_fingerprint": avatar_fingerprint(avatar),
        "image_size": str(s),
        "precision": precision,
        "input": f"{INPUT}: float32 (N, 3, {s}, {s}) RGB landmark images in [-1, 1] (see landmark_drawing)",
        "output": f"{OUTPUT}: float32 (N, 3, {s}, {s}) RGB frames in [-1, 1] ((x + 1) * 127.5 -> uint8)",
        "landmark_drawing": json.dumps(landmark_drawing(s, avatar.landmark_set)),
        "person_id": str(avatar.person_id),
        "mode": avatar.mode,
        "T": str(avatar.T),
        "source": avatar.source,
        "talkinghead_version": __version__,
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


# ------------------------------------------------------------------------------------------------ exporting
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's progress prints, warnings and log lines (e.g. about torchvision ops) kept off the console."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def to_onnx(net: FoldedRenderer, metadata: dict[str, str] | None = None, opset: int = OPSET) -> Any:
    """``net`` as an ``onnx.ModelProto`` (batch axis dynamic), with format, image size, precision and ``metadata``
    in its metadata_props."""
    require("onnx")
    require("onnxscript")  # torch's dynamo exporter translates through it
    s = net.image_size
    example = torch.zeros(2, 3, s, s)
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                net.eval(), (example,), None, dynamo=True, external_data=False, opset_version=opset,
                input_names=[INPUT], output_names=[OUTPUT], verbose=False,
                dynamic_shapes={"landmarks": {0: torch.export.Dim("batch")}},
            )
    except Exception as exc:  # noqa: BLE001 - the exporter's errors are long; the first line says what failed
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ExportError(f"the ONNX exporter failed: {type(exc).__name__}: {first}") from exc
    proto = program.model_proto
    # the exporter's per-node debug notes (stack traces with this machine's paths, FX names): half a small file
    g = proto.graph
    for item in (*g.node, *g.initializer, *g.input, *g.output, *g.value_info):
        del item.metadata_props[:]
    proto.producer_name = "talkinghead"
    proto.doc_string = "talkinghead avatar: landmark images -> frames (metadata: input, output, landmark_drawing)"
    base = {"format": FORMAT, "image_size": str(s), "precision": "fp16" if net.dtype == torch.float16 else "fp32"}
    for key, value in {**base, **(metadata or {})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def probe_images(avatar: Avatar, n: int = 3) -> torch.Tensor:
    """(n, 3, S, S) landmark images of the avatar's reference landmarks, shifted a little: export's check input."""
    ref = avatar.reference_landmarks.numpy().astype(np.float64)
    shifts = [(0.0, 0.0), (1.5, -1.0), (-2.0, 1.0), (0.5, 2.5)]
    return torch.stack([landmark_image_tensor(ref + np.array(shifts[i % 4]), avatar.image_size) for i in range(n)])


@dataclass
class ExportResult:
    """What :func:`export_avatar` wrote: ``path`` (``bytes`` in size), the max and mean |ONNX - PyTorch| on the
    check's frames and the bound on the max, export seconds and the file's metadata."""

    path: Path
    bytes: int
    max_abs_error: float
    mean_abs_error: float
    tolerance: float
    seconds: float
    metadata: dict[str, str] = field(default_factory=dict)


def load_for_export(
    avatar: str | Path | Avatar, ckpt: str | Path | None = None, runs_dir: str | Path = "runs",
    meta: MetaLearned | None = None,
) -> tuple[Avatar, MetaLearned]:
    """The avatar and its meta-learned model (the avatar's own checkpoint unless ``ckpt`` or ``meta``), checked."""
    av_ = avatar if isinstance(avatar, Avatar) else load_avatar(avatar)
    if meta is None:
        if ckpt is None and Path(av_.checkpoint).is_file():
            meta = load_meta_learned(av_.checkpoint)
        else:
            meta = load_meta_learned(resolve_checkpoint(None if ckpt is None else str(ckpt), runs_dir))
    av_.check_model(meta)
    return av_, meta


def default_out(avatar: str | Path) -> Path:
    """Where ``make export`` writes without OUT=: beside the avatar, ``avatar.onnx`` (the onnx backend looks there)."""
    return Path(avatar).with_suffix(".onnx")


def export_avatar(
    avatar: str | Path | Avatar,
    out: str | Path,
    *,
    precision: str = "fp32",
    ckpt: str | Path | None = None,
    runs_dir: str | Path = "runs",
    meta: MetaLearned | None = None,
    overwrite: bool = False,
    opset: int = OPSET,
) -> ExportResult:
    """Write ``avatar`` as one ONNX file ``out`` (atomically; checked with onnxruntime against PyTorch first).

    Errors (one line, nothing written): ``out`` exists and not ``overwrite``, not ``.onnx``, an unknown
    ``precision``, a corrupt or missing avatar, a checkpoint of another model, a missing package, or an export that
    does not match PyTorch within :data:`TOLERANCE`.
    """
    start = time.perf_counter()
    out = Path(out)
    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"OUT must be an .onnx file, got {out}")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} exists: give another out, or overwrite=True to replace it", option="overwrite")
    if out.is_dir():
        raise ExportError(f"{out} is a folder: give a file name such as {out / 'avatar.onnx'}")
    onnx = require("onnx")
    require("onnxscript")
    require("onnxruntime")
    av_, meta = load_for_export(avatar, ckpt, runs_dir, meta)
    generator = avatar_generator(av_, meta)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    metadata = file_metadata(av_, precision)
    proto = to_onnx(FoldedRenderer(generator, av_.psi, dtype), metadata, opset)

    # the check: onnxruntime on the avatar's landmark images vs the PyTorch renderer in fp32 (plain path)
    y = probe_images(av_)
    expected = FrameRenderer(generator, av_.psi, "cpu", Speed.plain()).render(y)
    data = proto.SerializeToString()
    got = OnnxRenderer(data).render(y)
    diff = (got - expected).abs()
    err, mean = float(diff.max()), float(diff.mean())
    tol, tol_mean = TOLERANCE[precision]
    if not (err <= tol and mean <= tol_mean):
        raise ExportError(f"the exported {precision} file differs from PyTorch by {err:.3g} at most, {mean:.3g} on "
                          f"average (bounds {tol:g}, {tol_mean:g}): not written")
    entry = proto.metadata_props.add()
    entry.key = "abs_error_vs_pytorch"
    entry.value = f"max {err:.3g}, mean {mean:.3g} ({len(y)} frames in [-1, 1], PyTorch fp32 reference)"
    with atomic_path(out) as tmp:
        onnx.save_model(proto, str(tmp))
    meta_out = {p.key: p.value for p in proto.metadata_props}
    return ExportResult(out, out.stat().st_size, err, mean, tol, time.perf_counter() - start, meta_out)


# ------------------------------------------------------------------------------------------------ running it
def _providers(ort: Any, device: str) -> list[str]:
    available = ort.get_available_providers()
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise ExportError("the onnx backend on cuda needs onnxruntime-gpu (this onnxruntime has "
                              f"{', '.join(available)}): use device cpu or pip install onnxruntime-gpu", option="device")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxRenderer:
    """An exported file run by onnxruntime: ``render(landmark images (N, 3, S, S) in [-1, 1]) -> (N, 3, S, S) float32
    on the CPU``, in batches (the interface of ``talkinghead.inference.render.FrameRenderer``).

    ``model``: a path or the serialised bytes; ``device``: ``cpu`` or ``cuda`` (needs onnxruntime-gpu).
    """

    def __init__(self, model: str | Path | bytes, device: str = "cpu", threads: int | None = None) -> None:
        ort = require("onnxruntime")
        opts = ort.SessionOptions()
        opts.log_severity_level = 3  # errors only
        if threads:
            opts.intra_op_num_threads = int(threads)
        name = "the exported model" if isinstance(model, bytes) else str(model)
        if not isinstance(model, bytes):
            if not Path(model).is_file():
                raise ExportError(f"ONNX file {model} does not exist (make one with `make export AVATAR=...`)")
            model = str(model)
        try:
            self.session = ort.InferenceSession(model, opts, providers=_providers(ort, str(device)))
        except ExportError:
            raise
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for unreadable files
            raise ExportError(f"onnxruntime cannot load {name}: {str(exc).strip().splitlines()[0]}") from exc
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        if self.metadata.get("format") != FORMAT:
            raise ExportError(f"{name} is not a talkinghead ONNX export (format {FORMAT} expected)")
        self.image_size = int(self.metadata["image_size"])
        self.device = torch.device("cpu")
        self.providers = self.session.get_providers()

    def render(self, landmark_images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        s = self.image_size
        if tuple(landmark_images.shape[1:]) != (3, s, s):
            raise ExportError(
                f"this ONNX file renders (N, 3, {s}, {s}) landmark images, got {tuple(landmark_images.shape)}"
            )
        out = []
        for y in landmark_images.split(batch_size):
            x = np.ascontiguousarray(y.detach().cpu().float().numpy())
            out.append(torch.from_numpy(self.session.run([OUTPUT], {INPUT: x})[0]))
        return torch.cat(out)


class OnnxAvatarRenderer:
    """An avatar rendered by onnxruntime: the onnxruntime backend of the renderer role
    (``talkinghead.inference.render.AvatarFrames``)."""

    backend = "onnxruntime"

    def __init__(self, avatar: Avatar, frames: OnnxRenderer, where: str) -> None:
        self.avatar, self.frames, self.where = avatar, frames, where
        self.device = frames.device

    def render(self, landmark_images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        return self.frames.render(landmark_images, batch_size)


def check_file(frames: OnnxRenderer, avatar: Avatar, path: str | Path) -> None:
    """Raise :class:`ExportError` unless the ONNX file renders ``avatar`` (fingerprints in its metadata)."""
    if frames.metadata.get("avatar_fingerprint") != avatar_fingerprint(avatar):
        raise ExportError(
            f"{path} renders another avatar (avatar {frames.metadata.get('avatar_fingerprint')}, model "
            f"{frames.metadata.get('model_fingerprint')}; this avatar is {avatar_fingerprint(avatar)}): export it "
            "again with OVERWRITE=1"
        )


def race(renderers: dict[str, Any], landmark_images: torch.Tensor, batch_size: int, rounds: int = 2
         ) -> dict[str, float]:
    """Frames/s of each renderer on ``landmark_images`` (N, 3, S, S): one warm-up render, then the best of
    ``rounds``, the renderers taking turns (so that a busy moment of the machine does not fall on one only)."""
    for r in renderers.values():
        r.render(landmark_images, batch_size)
    best = {name: float("inf") for name in renderers}
    for _ in range(rounds):
        for name, r in renderers.items():
            t0 = time.perf_counter()
            r.render(landmark_images, batch_size)
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: len(landmark_images) / max(t, 1e-9) for name, t in best.items()}


def avatar_renderer(
    avatar: Avatar,
    load_meta: Callable[[], MetaLearned],
    *,
    backend: str = "torch",
    device: torch.device | str = "cpu",
    speed: Any = None,
    avatar_path: str | Path | None = None,
    onnx_file: str | Path | None = None,
    notes: list[str] | None = None,
    batch_size: int = 16,
) -> AvatarFrames:
    """The renderer of ``avatar`` for ``backend`` (the role ``AvatarFrames``): an ``AvatarRenderer`` (torch) or an
    :class:`OnnxAvatarRenderer`.

    ``onnx``: ``onnx_file`` (checked against the avatar), else ``avatar.onnx`` beside ``avatar_path`` when it renders
    this avatar, else the avatar exported in memory (seconds; a note says so).  ``auto``: onnx where it is faster.
    On the CPU with onnxruntime installed and an exported file of this avatar at hand (given, or beside the avatar)
    both render a batch of probe frames (:func:`race`) and the faster one is used (a note gives the frames/s): which
    wins depends on the CPU (torch's bf16 fast path where bf16 is native) and on how busy it is.  Else torch (on
    CUDA its fast path runs on the GPU; exporting in-process first costs seconds a short clip does not earn back).
    ``load_meta()`` is called only when the model is needed.
    """
    notes = [] if notes is None else notes
    if backend not in BACKENDS:
        raise ExportError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}", option="backend")
    device = torch.device(device)
    beside = default_out(avatar_path) if avatar_path is not None else None
    file = Path(onnx_file) if onnx_file else beside if beside is not None and beside.is_file() else None
    if backend == "auto":
        usable = device.type == "cpu" and file is not None and _installed("onnxruntime")
        if usable:
            try:
                frames = OnnxRenderer(file, "cpu")
                check_file(frames, avatar, file)
            except ExportError as exc:
                if onnx_file:
                    raise
                notes.append(f"backend auto: {exc}; rendering with torch")
            else:
                ours = OnnxAvatarRenderer(avatar, frames, str(file))
                theirs = AvatarRenderer(avatar, load_meta(), device=device, speed=speed)
                n = min(batch_size, 4)
                fps = race({"onnxruntime": ours, "torch": theirs}, probe_images(avatar, n), n)
                winner = max(fps, key=fps.get)
                notes.append(f"backend auto: {fps['onnxruntime']:.1f} frames/s with onnxruntime, {fps['torch']:.1f} "
                             f"with torch on {n} probe frames: rendering with {winner}")
                return ours if winner == "onnxruntime" else theirs
        backend = "torch"
    if backend == "torch":
        return AvatarRenderer(avatar, load_meta(), device=device, speed=speed)
    require("onnxruntime")
    if file is not None:
        frames = OnnxRenderer(file, device.type)
        try:
            check_file(frames, avatar, file)
            return OnnxAvatarRenderer(avatar, frames, str(file))
        except ExportError as exc:
            if onnx_file:
                raise
            notes.append(f"onnx: {exc}; exported this avatar in memory instead")
    t0 = time.perf_counter()
    generator = avatar_generator(avatar, load_meta())
    proto = to_onnx(FoldedRenderer(generator, avatar.psi), file_metadata(avatar, "fp32"))
    frames = OnnxRenderer(proto.SerializeToString(), device.type)
    notes.append(f"onnx: exported the avatar in memory ({time.perf_counter() - t0:.1f} s); "
                 "`make export AVATAR=...` writes it beside the avatar for next time")
    return OnnxAvatarRenderer(avatar, frames, "memory")


__all__ = [
    "BACKENDS", "FORMAT", "PRECISIONS", "TOLERANCE", "ExportError", "ExportResult", "FoldedAdaIN", "FoldedRenderer",
    "MissingPackageError", "OnnxAvatarRenderer", "OnnxRenderer", "OnnxSelfAttention", "OnnxUpConv",
    "avatar_fingerprint", "avatar_renderer", "check_file", "default_out", "export_avatar", "file_metadata",
    "landmark_drawing", "load_for_export", "probe_images", "race", "require", "to_onnx",
]
