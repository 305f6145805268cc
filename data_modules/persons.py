"""The small person API every DataModule answers, so the stages find a person's frames without knowing the dataset.

``known_ids()``: the person, video (and clip) ids it can hand out; ``held_out_video_ids()``: the videos of the
persons meta-learning never saw (what Table 1 evaluates); ``person_frames(id, video_length)``: one id's frames
(``PersonData``); ``where``: what the ids are looked up in, for messages.  ``open_source`` builds the DataModule
a (checkpoint's) data config names, to ask it.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

#: frames of a synthetic video (t = 0 .. 63) when an id of the embedded data is read as a video: the one default of
#: ``person_frames``, ``shots.resolve``, ``api``, ``reenact``, ``crossid`` and the tools (configs: ``synthetic_video_length``)
SYNTHETIC_VIDEO_LENGTH = 64


@dataclass
class PersonData:
    """One id's frames as a DataModule hands them out.

    ``loader(positions)`` -> ``{"frames", "landmark_images": (N, 3, S, S) float32 in [-1, 1], "landmarks":
    (N, 68, 2)}`` for positions in ``[0, num_frames)``: the frames of its videos end to end, in id order.
    """

    person_id: str
    video_ids: list[str]
    num_frames: int
    loader: Callable[[Sequence[int]], dict[str, torch.Tensor]]


@runtime_checkable
class PersonSource(Protocol):
    """What every DataModule of this package answers (``SyntheticDataModule``, ``VoxCelebDataModule``)."""

    @property
    def where(self) -> str: ...

    def known_ids(self) -> list[str]: ...

    def held_out_video_ids(self) -> list[str]: ...

    def person_frames(self, id_: str, video_length: int = SYNTHETIC_VIDEO_LENGTH) -> PersonData: ...


def open_source(data_cfg: Mapping[str, Any], image_size: int, root: str | None = None) -> PersonSource:
    """The DataModule that ``data_cfg`` (its ``_target_`` and arguments) names, built to answer the person API:
    frames at ``image_size``, no loader workers, one source frame per sample, ``root`` (a shard folder) in place
    of the config's when given.  Only arguments its class takes are passed (a checkpoint of an older version may
    carry others).  Raises the DataModule's own errors (a missing root, an unreadable manifest) and ``ValueError``
    for a config that names no DataModule of the person API."""
    from hydra.utils import get_class
    from omegaconf import DictConfig, OmegaConf

    if isinstance(data_cfg, DictConfig):
        data_cfg = OmegaConf.to_container(data_cfg, resolve=True)
    target = str(data_cfg.get("_target_") or "")
    if not target:
        raise ValueError("the data config names no DataModule (no _target_)")
    cls = get_class(target)
    params = inspect.signature(cls.__init__).parameters
    kwargs = {str(k): v for k, v in data_cfg.items() if k in params and k not in ("self", "_target_")}
    for key, value in (("image_size", image_size), ("K", 1), ("num_workers", 0), ("root", root)):
        if key in params and value is not None:
            kwargs[key] = value
    source = cls(**kwargs)
    if not isinstance(source, PersonSource):
        raise ValueError(f"{target} does not answer the person API (known_ids, held_out_video_ids, person_frames)")
    return source
