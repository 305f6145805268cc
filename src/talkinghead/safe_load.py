"""Reading the project's ``.ckpt`` / ``.pt`` files without running code in them: every load of a checkpoint, an
avatar or a tool's dump goes through :func:`safe_load`.

A pickle can name any Python callable to rebuild an object, so an unrestricted ``torch.load`` of a crafted
file runs its code before anything can look at the contents.  :func:`safe_load` reads with PyTorch's restricted
unpickler (``weights_only=True``: tensors, numbers, strings, plain containers) plus the few classes listed in
:data:`ALLOWED_GLOBALS`; a file that names any other global is refused with one line naming the file and the
globals, and nothing in it runs.
"""
from __future__ import annotations

import collections
import pickle
import re
import typing
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode

from talkinghead.errors import TalkingHeadError

#: Globals beyond weights_only's own that the project's files may name.  Checkpoints written today need none
#: (``torch.serialization.get_unsafe_globals_in_checkpoint`` on a ``tests/finetune_helpers.tiny_checkpoint`` lists
#: nothing); those written before commit 7164227 (3 Dec 2026) hold omegaconf ``ListConfig`` s in W's SparseAdam
#: param groups, which need these data-only classes (plus builtins weights_only already allows).
ALLOWED_GLOBALS: tuple[Any, ...] = (
    ListConfig, DictConfig, ContainerMetadata, Metadata, AnyNode, typing.Any, collections.defaultdict, dict, list,
    int,
)

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
#: the lines of PyTorch's weights_only message that are advice, not the reason
_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch 2.6")


class UnsafeFileError(TalkingHeadError, ValueError):
    """A checkpoint or avatar file that would run code (or build objects of unknown classes) when loaded."""


def refused_globals(path: Path, exc: BaseException) -> list[str]:
    """The globals of ``path`` beyond :data:`ALLOWED_GLOBALS` that the restricted unpickler refused with ``exc``:
    from a scan of the file's pickle (which runs nothing), else from ``exc``'s message; [] when it named none."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - not a zip checkpoint (a bare pickle, a legacy torch.save)
        names = []
    allowed = {f"{g.__module__}.{getattr(g, '__qualname__', getattr(g, '_name', g))}" for g in ALLOWED_GLOBALS}
    return [n for n in names if n not in allowed] or _GLOBAL.findall(str(exc))


@contextmanager
def allowed_globals() -> Iterator[None]:
    """Within it, ``torch.load(weights_only=True)`` anywhere (Lightning's resume) also takes :data:`ALLOWED_GLOBALS`."""
    with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)):
        yield


def safe_load(path: str | Path, what: str = "checkpoint", mmap: bool = False) -> Any:
    """``torch.load(path)`` on the CPU with the restricted unpickler and :data:`ALLOWED_GLOBALS`.

    A file that names any other global -> one-line :class:`UnsafeFileError` (``what`` names the kind of file); a
    pickle the restricted unpickler cannot read -> a one-line ``pickle.UnpicklingError``; any other failure (a
    missing, truncated or foreign file) propagates as ``torch.load`` raises it.  The caller words those two.  ``mmap``: memory-map the tensors (zip
    checkpoints; another file is read whole, and refused the same way).
    """
    path = Path(path)
    try:
        with allowed_globals():
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        raise refused(path, exc, what) from exc


def refused(path: str | Path, exc: BaseException, what: str = "checkpoint") -> Exception:
    """The one-line error for ``path``, which the restricted unpickler refused with ``exc`` (in ``safe_load``, or
    Lightning's own weights_only load when resuming): :class:`UnsafeFileError` when the file names globals, else
    (not a pickle torch.save writes: text, a foreign pickle) a short ``pickle.UnpicklingError`` for the caller to
    word."""
    names = refused_globals(Path(path), exc)
    if names:
        shown = ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")
        return UnsafeFileError(f"{path} is refused: it names {shown}, which no {what} of this project holds (loading "
                               "it could run code); nothing in it was run")
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith(_BOILERPLATE)]
    reason = lines[0].removeprefix("WeightsUnpickler error:").strip() if lines else "an unknown instruction"
    return pickle.UnpicklingError(f"its pickle stops at: {reason}")
