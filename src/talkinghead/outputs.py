"""The one overwrite rule of every command that writes files (finetune, reenact, export, evaluate; the web page and
the Python API through ``talkinghead.api``).

A command declares the files it will write (its output set) and the files and folders it reads (its inputs:
driver, avatar, checkpoint, photos, ...).  :func:`check_outputs` runs before any work and refuses, in one line:

* an output that is one of the inputs, or lies inside an input folder: always, even with ``overwrite``;
* an output that exists already: unless ``overwrite``;
* an output whose folder cannot be written.

It also removes stale temporary files that a killed writer left beside an output (``talkinghead.files``'s
``.<stem>.partial-<pid><suffix>`` of a process that no longer runs).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from talkinghead.errors import TalkingHeadError
from talkinghead.files import partials, process_alive

#: how a caller says "replace it", in every surface's words
OVERWRITE_HINT = "overwrite=true (make: OVERWRITE=1, talkinghead reenact/export: --overwrite)"


class OutputError(TalkingHeadError, ValueError):
    """An output would replace an input, an existing file not meant to be replaced, or cannot be written."""


def _absolute(path: str | Path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_writable(path: str | Path, what: str) -> None:
    """``OutputError`` naming the folder when ``path`` (to be written) cannot be created there."""
    path = Path(path)
    folder = path.expanduser().absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {what} {path}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OutputError(
            f"cannot write {what} {path}: the folder {folder} is not writable ({exc.strerror or exc})"
        ) from None


def remove_stale_partials(path: str | Path) -> list[Path]:
    """Remove ``.<stem>.partial-<pid><suffix>`` files beside ``path`` whose process no longer runs (a writer that
    was killed, SIGKILL or power loss); returns them."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for f, pid in partials(path):
        if pid != os.getpid() and not process_alive(pid):
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def check_outputs(
    outputs: Iterable[str | Path],
    inputs: Mapping[str, str | Path | Iterable[str | Path] | None],
    *,
    overwrite: bool = False,
    label: str = "output",
    hint: str = OVERWRITE_HINT,
) -> list[Path]:
    """Before any work: the rule above for every file of ``outputs``; returns them as paths.

    ``inputs``: {role: path, or several paths, or None}; a path that does not exist (an id such as
    ``syn0035/v00``) is no file to protect.  ``label``: how the error names an output (``OUT``, ``out=``).
    """
    outs = [Path(o) for o in outputs]
    named: list[tuple[str, Path]] = []
    for role, value in inputs.items():
        if value is None:
            continue
        values = [value] if isinstance(value, (str, Path)) else list(value)
        named += [(role, Path(str(v)).expanduser()) for v in values if str(v)]
    for out in outs:
        target = _absolute(out)
        for role, inp in named:
            if not inp.exists():
                continue
            if _same(out, inp) or target == _absolute(inp):
                raise OutputError(f"{label} {out} is the {role} itself: give another {label} (the {role} is kept)")
            if inp.is_dir() and _absolute(inp) in target.parents:
                raise OutputError(f"{label} {out} would be written into the {role} folder {inp}: "
                                  f"give a {label} outside it (the {role} is kept)")
    for out in outs:
        if out.is_dir():
            raise OutputError(f"{label} {out} is a folder: give a file name")
        if out.exists() and not overwrite:
            raise OutputError(f"{out} exists: give another {label}, or {hint} to replace it")
    for out in {o.parent: o for o in reversed(outs)}.values():  # one file per folder
        check_writable(out, label)
    for out in outs:
        remove_stale_partials(out)
    return outs


__all__ = ["OVERWRITE_HINT", "OutputError", "check_outputs", "check_writable", "remove_stale_partials"]
