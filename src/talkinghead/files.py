"""Files written atomically: a temporary name in the same folder, then ``os.replace`` (a killed writer leaves
the old file or none, never half of one).  Below every stage: avatars, videos, ONNX exports and evaluation tables
use it."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from talkinghead.errors import TalkingHeadError

#: errnos of a full disk (or a spent quota)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(TalkingHeadError, OSError):
    """No space left where a file was being written (nothing was left half written)."""


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from) is a full disk: OSError ENOSPC / EDQUOT (PyAV's
    ``av.error.OSError`` too)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


def partial_path(path: Path, pid: int | None = None) -> Path:
    """Where :func:`atomic_path` writes ``path`` first: ``.<stem>.partial-<pid><suffix>`` beside it."""
    return path.with_name(f".{path.stem}.partial-{os.getpid() if pid is None else pid}{path.suffix}")


def partials(path: Path) -> Iterator[tuple[Path, int]]:
    """``(file, writer's pid)`` of each :func:`partial_path` of ``path`` that exists."""
    for f in path.parent.glob(f".{path.stem}.partial-*{path.suffix}"):
        pid = f.name[len(f".{path.stem}.partial-"):len(f.name) - len(path.suffix)]
        if pid.isdigit() and f.name == partial_path(path, int(pid)).name:
            yield f, int(pid)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs here (a zombie, finished but not yet reaped, does not)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[:1] == ["Z"])


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on any error it is removed.

    The temporary name keeps the suffix (writers that pick a format from it still work).  A full disk while
    writing (an ``OSError`` ENOSPC from the writer, or an exception raised from one) becomes a one-line
    :class:`DiskFullError` naming the folder; ``path`` is left as it was.  Writers should write through Python file
    objects or PyAV (``torch.save`` to a path reports a full disk as an obscure ``RuntimeError``; to a file object
    it raises the ``OSError``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if disk_full(exc):
            raise DiskFullError(
                f"no space left on the disk of {path.parent}/ while writing {path.name}: free some space and run "
                f"again ({'the old file is kept' if path.exists() else 'nothing was written'})"
            ) from exc
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
