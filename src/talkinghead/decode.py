"""The one bounded decoder of every image and video a user gives: page uploads, live frames, CLI sources,
drivers and photos (``data_modules.sources`` decodes through it too).

Three bounds (:class:`Bounds`), checked on what is actually decoded, before any full-size array of it exists:

* **pixels per frame** (or per image): a video's codec is told ``max_pixels``, so FFmpeg refuses a frame over it
  before allocating it; an image codec's packets (PNG, JPEG, ... in a video) and image files have their header's
  size read without decoding (PIL's lazy ``Image.open``), so a stream header or first frame that lies about the
  size does not matter;
* **frames per input**: frames a video holds (its header's count, else its packets counted) and frames decoded;
* **decoded bytes per job**: every array a job keeps (a video's frames, photos) is charged to its
  :class:`Budget` before it is allocated; a job is what :func:`job` encloses (one ``make_avatar`` or ``drive``),
  or else one call.

Encoded bytes per image are bounded too where an image arrives as one piece (a live frame).  Over a bound is
one line (:class:`DecodeBoundError`) naming the file, the frame and the bound.  High-depth images (16-bit
grayscale PNG/TIFF) are scaled to uint8 by their range instead of clipped.  The defaults come from the
environment (``TALKINGHEAD_MAX_MEGAPIXELS``, ``TALKINGHEAD_MAX_FRAMES``, ``TALKINGHEAD_MAX_DECODED_GB``); the
page sets its own.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np

from talkinghead.errors import TalkingHeadError

ENV = {"max_pixels": "TALKINGHEAD_MAX_MEGAPIXELS", "max_frames": "TALKINGHEAD_MAX_FRAMES",
       "max_bytes": "TALKINGHEAD_MAX_DECODED_GB"}

P = ParamSpec("P")
R = TypeVar("R")

#: codecs whose every packet is one image file PIL can read the header of (the size is checked per packet)
IMAGE_CODECS = {"png", "apng", "mjpeg", "jpegls", "bmp", "tiff", "webp", "gif", "jpeg2000", "qoi"}


class DecodeError(TalkingHeadError, RuntimeError):
    """A file could not be decoded (corrupt, truncated, not a video or image)."""


class DecodeBoundError(TalkingHeadError, ValueError):
    """An input over a decoding bound (pixels per frame, frames per input, decoded bytes per job, encoded bytes)."""


@dataclass(frozen=True)
class Bounds:
    """``max_pixels`` per frame or image; ``max_frames`` per input; ``max_bytes`` decoded per job;
    ``max_encoded`` bytes per image that arrives whole (a live frame; 0: none); ``env``: the defaults came from
    the environment (the messages say which variable raises a bound)."""

    max_pixels: int = 4096 * 4096
    max_frames: int = 20_000
    max_bytes: int = 8 * 2**30
    max_encoded: int = 0
    env: bool = False

    @classmethod
    def from_env(cls) -> Bounds:
        """The defaults, each overridden by its environment variable (megapixels, frames, GiB)."""
        try:
            mpx = float(os.environ.get(ENV["max_pixels"], cls.max_pixels / 1e6))
            frames = int(os.environ.get(ENV["max_frames"], cls.max_frames))
            gib = float(os.environ.get(ENV["max_bytes"], cls.max_bytes / 2**30))
        except ValueError as exc:
            raise DecodeBoundError(f"a decoding bound in the environment is no number: {exc}") from None
        return cls(int(mpx * 1e6), frames, int(gib * 2**30), env=True)

    def hint(self, key: str) -> str:
        return f" (raise it with {ENV[key]}=...)" if self.env and key in ENV else ""

    def too_many_pixels(self, name: str, w: int, h: int, what: str) -> DecodeBoundError:
        return DecodeBoundError(f"{name}: {what} is {w}×{h} = {mpx(w * h)} Mpx, over the bound of "
                                f"{mpx(self.max_pixels)} Mpx per frame{self.hint('max_pixels')}")


def mpx(pixels: float) -> str:
    return f"{pixels / 1e6:.3g}"


def gib(nbytes: float) -> str:
    """Bytes in GiB, MiB or KiB (3 digits)."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes / 2**10:.3g} KiB"


@dataclass
class Budget:
    """The decoded bytes a job has kept so far, under ``bounds``."""

    bounds: Bounds = field(default_factory=Bounds.from_env)
    used: int = 0

    def charge(self, name: str, nbytes: int, what: str) -> None:
        """Count ``nbytes`` (``what``: e.g. '300 frames of 1024×576') before they are allocated, or refuse."""
        if self.used + nbytes > self.bounds.max_bytes:
            already = f" ({gib(self.used)} of it decoded already)" if self.used else ""
            raise DecodeBoundError(
                f"{name}: decoding {what} takes {gib(nbytes)}, over the bound of {gib(self.bounds.max_bytes)} "
                f"decoded per job{already}: use fewer or smaller frames{self.bounds.hint('max_bytes')}")
        self.used += int(nbytes)


_budget: ContextVar[Budget | None] = ContextVar("talkinghead_decode_budget", default=None)


@contextlib.contextmanager
def job(bounds: Bounds | None = None) -> Iterator[Budget]:
    """One job's budget for everything decoded inside (a job inside a job shares the outer one)."""
    outer = _budget.get()
    if outer is not None:
        yield outer
        return
    token = _budget.set(Budget(bounds or Bounds.from_env()))
    try:
        yield _budget.get()  # type: ignore[misc]
    finally:
        _budget.reset(token)


def one_job(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator: ``fn`` runs as one job (:func:`job`), unless called inside one."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with job():
            return fn(*args, **kwargs)

    return wrapper


def budget() -> Budget:
    """The current job's budget, or a fresh one (from the environment) for a call outside any job."""
    return _budget.get() or Budget()


def scaled_size(width: int, height: int, max_side: int = 0) -> tuple[int, int]:
    """(width, height) scaled down (aspect kept, even sizes) so that neither exceeds ``max_side`` (0: as they are)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    f = max_side / max(width, height)
    return max(2, int(width * f) // 2 * 2), max(2, int(height * f) // 2 * 2)


# ------------------------------------------------------------------------------------------------ images
def _open_image(source: str | Path | bytes, name: str, bounds: Bounds) -> Any:
    """PIL's lazy open (the header only, no pixels), the pixel bound checked; one-line errors."""
    from PIL import Image, UnidentifiedImageError

    if bounds.max_encoded:
        size = len(source) if isinstance(source, (bytes, bytearray)) else Path(source).stat().st_size
        if size > bounds.max_encoded:
            raise DecodeBoundError(f"{name}: {size / 1e6:.3g} MB encoded, over the bound of "
                                   f"{bounds.max_encoded / 1e6:.3g} MB per image")
    try:
        im = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except Image.DecompressionBombError as exc:  # over PIL's own (higher) bound: its message has the pixels
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{mpx(int(found.group(1)))} Mpx" if found else "too many pixels"
        raise DecodeBoundError(f"{name}: {size}, over the bound of {mpx(bounds.max_pixels)} Mpx per image "
                               f"(a decompression bomb?){bounds.hint('max_pixels')}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DecodeError(f"cannot read {name}: not a readable image") from exc
    w, h = im.size
    if w * h > bounds.max_pixels:
        im.close()
        raise DecodeBoundError(f"{name}: {w}×{h} = {mpx(w * h)} Mpx, over the bound of {mpx(bounds.max_pixels)} "
                               f"Mpx per image{bounds.hint('max_pixels')}")
    return im


def image_size(source: str | Path | bytes, name: str | None = None, bounds: Bounds | None = None) -> tuple[int, int]:
    """(width, height) of an image from its header, nothing decoded; over the pixel bound or unreadable: one line."""
    bounds = bounds or budget().bounds
    with _open_image(source, name or _name(source), bounds) as im:
        return im.size


def to_rgb8(im: Any) -> np.ndarray:
    """A PIL image of any mode -> uint8 (H, W, 3) RGB; high-depth modes (16-bit I;16*, 32-bit I, float F) are
    scaled by their range (65535 -> 255), not clipped."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        a = np.asarray(im).astype(np.float64)
        if im.mode == "F" and a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
        elif not (im.mode == "F" and a.size and np.nanmax(a) <= 255.0):
            a = a / 257.0  # 16-bit range; a 32-bit image holds 16-bit values (PNG/TIFF) in practice
        g = np.clip(np.round(np.nan_to_num(a)), 0, 255).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def read_image(source: str | Path | bytes, max_side: int = 0, name: str | None = None,
               bounds: Bounds | None = None, charge: bool = True) -> np.ndarray:
    """One image (a file or its bytes) -> uint8 (H, W, 3) RGB, EXIF orientation applied, scaled down while
    decoding to at most ``max_side`` pixels a side (0: full size; JPEG decodes at a reduced scale directly).
    Its pixels are checked on the header before decoding and (``charge``) its array charged to the job's budget."""
    from PIL import Image, ImageOps

    work = budget() if charge or bounds is None else None  # a live frame with its bounds reads no environment
    bounds = bounds or work.bounds
    name = name or _name(source)
    try:
        with _open_image(source, name, bounds) as im:
            if max_side and max(im.size) > max_side and im.mode in ("RGB", "L", "CMYK", "YCbCr"):
                im.draft("RGB", (max_side, max_side))  # JPEG: decodes at 1/2, 1/4 or 1/8 scale
            w, h = scaled_size(*im.size, max_side) if max_side else im.size
            if work is not None and charge:
                work.charge(name, w * h * 3, f"{w}×{h}")
            if im.getexif().get(0x0112, 1) != 1:  # EXIF orientation (a transpose copies: only when needed)
                im = ImageOps.exif_transpose(im) or im
            if max_side and max(im.size) > max_side:
                im = Image.fromarray(to_rgb8(im))  # 8-bit RGB first (PIL resizes few high-depth modes)
                im.thumbnail((max_side, max_side), Image.Resampling.BOX)
            return np.ascontiguousarray(to_rgb8(im))
    except (DecodeBoundError, DecodeError):
        raise
    except (OSError, ValueError, SyntaxError) as exc:  # a truncated or corrupt file fails while decoding
        raise DecodeError(f"cannot read {name}: not a readable image") from exc


def _name(source: Any) -> str:
    return "the image" if isinstance(source, (bytes, bytearray)) else Path(source).name


# ------------------------------------------------------------------------------------------------ videos
def count_frames(container: Any, limit: int = 0) -> int:
    """Frames of the container's first video stream: its header's count, else its packets counted (no decoding,
    stopping past ``limit`` when given), the container rewound after."""
    stream = container.streams.video[0]
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    n = 0
    for pkt in container.demux(stream):
        n += bool(pkt.size)
        if limit and n > limit:
            break
    container.seek(0)
    return n


def even_indices(num_frames: int, count: int) -> np.ndarray:
    """``count`` frame indices spread evenly over ``[0, num_frames)`` (all when ``count`` >= num_frames).

    Returns int64 ``(min(count, num_frames),)``, strictly increasing.
    """
    if num_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    if count <= 0 or count >= num_frames:
        return np.arange(num_frames, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, num_frames - 1, count)).astype(np.int64))


def _packet_size(packet: Any) -> tuple[int, int] | None:
    """(width, height) from the header of an image codec's packet (one PNG/JPEG/... file), nothing decoded."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(bytes(packet))) as im:
            return im.size
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        side = int(int(found.group(1)) ** 0.5) if found else 1 << 16
        return side, side
    except Exception:  # noqa: BLE001 - not readable by PIL: FFmpeg's max_pixels still bounds it
        return None


def read_video(path: str | Path, count: int = 0, max_side: int = 0, threads: str | None = "AUTO",
               name: str | None = None) -> tuple[np.ndarray, np.ndarray, float, int]:
    """Decode ``count`` evenly spaced frames of a video file (all when 0), each scaled down while decoding so that
    its longer side is at most ``max_side`` pixels (0: full size), within the job's :class:`Bounds`.

    Returns ``(frames uint8 (N,H,W,3) RGB, indices int64 (N,) source frame numbers, fps, frames asked for)``; a
    frame of another size than the first kept one is scaled to it.  ``DecodeError`` with FFmpeg's reason when the
    file is no decodable video; ``DecodeBoundError`` (one line: file, frame, bound) over a bound.  A truncated
    file whose first frames decode returns those frames only (the shortfall is fewer frames than asked).
    """
    import av

    path = Path(path)
    name = name or path.name
    work = budget()
    bounds = work.bounds
    frames: np.ndarray | None = None  # filled in place: no list of frames and no stacked copy of it
    got: list[int] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DecodeError(f"{name}: no video stream")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            if ctx.width * ctx.height > bounds.max_pixels:
                raise bounds.too_many_pixels(name, ctx.width, ctx.height, "frame 0")
            ctx.options = {"max_pixels": str(bounds.max_pixels)}  # FFmpeg refuses a larger frame before allocating it
            if threads:
                stream.thread_type = threads  # same pixels as one thread (FFmpeg's threading is exact)
            fps = float(stream.average_rate or stream.guessed_rate or 25)
            total = count_frames(container, bounds.max_frames)
            if total > bounds.max_frames:
                held = f"{total}" if stream.frames else f"more than {bounds.max_frames}"  # packets counted up to it
                raise DecodeBoundError(f"{name}: {held} frames, over the bound of {bounds.max_frames} frames per "
                                       f"input{bounds.hint('max_frames')}")
            wanted = even_indices(total, count)
            wanted_set = set(wanted.tolist())
            last = int(wanted[-1]) if len(wanted) else -1
            image_codec = ctx.name in IMAGE_CODECS
            packets = 0
            i = 0
            try:
                for packet in container.demux(stream):
                    if packet.size:
                        if image_codec and (size := _packet_size(packet)) and size[0] * size[1] > bounds.max_pixels:
                            raise bounds.too_many_pixels(name, *size, f"frame {packets}")
                        packets += 1
                        if packets > bounds.max_frames:
                            raise DecodeBoundError(f"{name}: more than {bounds.max_frames} frames, over the bound "
                                                   f"of {bounds.max_frames} frames per input{bounds.hint('max_frames')}")
                    try:
                        decoded = stream.decode(packet)
                    except av.error.ArgumentError:  # EINVAL: a frame over max_pixels, refused unallocated
                        raise DecodeBoundError(
                            f"{name}: a frame at or before frame {packets - 1} is over the bound of "
                            f"{mpx(bounds.max_pixels)} Mpx per frame (FFmpeg refused to decode it)"
                            f"{bounds.hint('max_pixels')}") from None
                    for frame in decoded:
                        if frame.width * frame.height > bounds.max_pixels:  # a decoder that ignores max_pixels
                            raise bounds.too_many_pixels(name, frame.width, frame.height, f"frame {i}")
                        if i in wanted_set:
                            if frames is None:
                                w, h = scaled_size(frame.width, frame.height, max_side)
                                work.charge(name, len(wanted) * h * w * 3, f"{len(wanted)} frames of {w}×{h}")
                                frames = np.empty((len(wanted), h, w, 3), np.uint8)
                            h, w = frames.shape[1:3]
                            if (w, h) == (frame.width, frame.height):
                                frames[len(got)] = frame.to_ndarray(format="rgb24")
                            else:  # swscale scales while converting: no full-size RGB copy
                                frames[len(got)] = frame.to_ndarray(format="rgb24", width=w, height=h,
                                                                    interpolation="AREA")
                            got.append(i)
                        i += 1
                    if i > last:
                        break
            except (av.error.FFmpegError, EOFError):
                pass  # truncated stream: keep what decoded
    except (DecodeError, DecodeBoundError):
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError, IndexError, EOFError) as e:
        raise DecodeError(f"cannot decode {name}: {e}") from e
    if not got or frames is None:
        raise DecodeError(f"cannot decode {name}: no frame decodes (corrupt or truncated)")
    return frames[: len(got)], np.asarray(got, dtype=np.int64), fps, len(wanted)

