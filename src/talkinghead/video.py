"""Video files: frames -> H.264 mp4 (written atomically), and the driver | landmarks | result layout.

Used by reenactment, the avatar previews and the demo page.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from talkinghead.errors import TalkingHeadError
from talkinghead.files import atomic_path
from talkinghead.visualize import to_uint8


class VideoWriteError(TalkingHeadError, ValueError):
    """Nothing to write."""


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 25.0) -> Path:
    """uint8 (H, W, 3) RGB frames -> H.264 mp4 (yuv420p), written atomically; returns ``path``.

    Odd sizes are padded by one black pixel (yuv420p needs even sides).  No frame -> VideoWriteError, no file.
    """
    from fractions import Fraction

    import av

    path = Path(path)
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with atomic_path(path) as tmp:
        n = 0
        with av.open(str(tmp), "w", format="mp4") as container:
            stream = None
            for frame in frames:
                h, w = frame.shape[:2]
                if stream is None:
                    stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
                    stream.width, stream.height = w + w % 2, h + h % 2
                    stream.pix_fmt = "yuv420p"
                    if codec == "libx264":
                        stream.options = {"crf": "18", "preset": "medium"}
                if (h % 2) or (w % 2):
                    frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
                vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                for pkt in stream.encode(vf):
                    container.mux(pkt)
                n += 1
            if stream is None:
                raise VideoWriteError(f"no frame to write to {path}")
            for pkt in stream.encode():
                container.mux(pkt)
    return path


def side_by_side_frames(
    driver: torch.Tensor, landmark_images: torch.Tensor, result: torch.Tensor
) -> Iterator[np.ndarray]:
    """(N, 3, S, S) x 3 in [-1, 1] -> N frames uint8 (S, 3S, 3): driver | landmark image | result."""
    for d, y, r in zip(driver, landmark_images, result):
        yield np.concatenate([to_uint8(d), to_uint8(y), to_uint8(r)], axis=1)
