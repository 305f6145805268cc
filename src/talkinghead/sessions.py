"""The demo page's disk: one folder per server, one per browser session inside it, and their cleanup.

    <base>/talkinghead-demo-<pid>-<random>/     the server's folder (base: the system temp dir)
        server.pid                              "<pid> <start time>": marks the folder as a demo server's
        gradio/                                 Gradio's upload and output cache (GRADIO_TEMP_DIR)
        sessions/<session hash>/                what one browser session uploaded and made
            avatars/<name>/avatar.pt            its avatars (samples.png, preview.mp4 beside)

Nothing under ``runs/`` is served: a session's files are copied or written into its own folder, and Gradio serves
only the copies in its cache (names are hashes of their content).  The server's folder is removed when it stops
(SIGINT, SIGTERM, normal exit); at start, folders of servers that died without cleaning up (their pid no longer
runs that process) are removed, and nothing else: folders without the mark are never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path

PREFIX = "talkinghead-demo-"
MARK = "server.pid"


def _start_time(pid: int) -> str:
    """The kernel's start time of process ``pid`` ('' where /proc is absent): tells a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, started: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    now = _start_time(pid)
    return not (started and now and now != started)


def remove_leftovers(base: Path) -> list[Path]:
    """Remove the folders under ``base`` of demo servers that are no longer running; returns them."""
    removed = []
    if not base.is_dir():
        return removed
    for d in sorted(base.glob(PREFIX + "*")):
        mark = d / MARK
        if d.is_symlink() or not d.is_dir() or not mark.is_file():
            continue  # not one of ours
        try:
            pid_text, _, started = mark.read_text().strip().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if pid == os.getpid() or _alive(pid, started):
            continue
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def session_id(request: object) -> str:
    """The browser session's id (Gradio's ``session_hash``) as a folder name; ``local`` outside a request."""
    sid = re.sub(r"[^A-Za-z0-9_-]", "", str(getattr(request, "session_hash", "") or ""))[:64]
    return sid or "local"


class ServerFolder:
    """The server's own folder (see the module docstring).  ``removed_leftovers``: crashed servers' folders
    removed when this one was made."""

    def __init__(self, base: str | os.PathLike[str] | None = None) -> None:
        base = Path(base) if base else Path(tempfile.gettempdir())
        base.mkdir(parents=True, exist_ok=True)
        self.removed_leftovers = remove_leftovers(base)
        self.root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))
        (self.root / MARK).write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
        self.gradio = self.root / "gradio"
        self.sessions = self.root / "sessions"
        self.gradio.mkdir()
        self.sessions.mkdir()
        self._cached: dict[Path, set[str]] = {}  # Gradio cache folder -> sessions that were sent / sent it
        self._lock = threading.Lock()  # handlers, page loads and unloads run on Gradio's worker threads

    def session(self, sid: str) -> Path:
        d = self.sessions / sid
        d.mkdir(parents=True, exist_ok=True)
        return d

    def remember_cached(self, sid: str, paths: Iterable[str | os.PathLike[str] | None]) -> None:
        """Note the Gradio cache folders of files a session uploaded or was sent (removed at its end)."""
        from gradio.processing_utils import hash_file

        for p in paths:
            if not p:
                continue
            p = Path(p)
            try:
                if p.resolve().is_relative_to(self.gradio.resolve()):
                    folder = self.gradio / p.resolve().relative_to(self.gradio.resolve()).parts[0]
                elif p.is_file():  # a file the page sends: Gradio copies it to <cache>/<hash of its bytes>/
                    folder = self.gradio / hash_file(p)
                else:
                    continue
            except (OSError, ValueError, IndexError):
                continue
            with self._lock:
                self._cached.setdefault(folder, set()).add(sid)

    def end_session(self, sid: str) -> None:
        """Remove a session's folder and the cache copies no other session shares."""
        shutil.rmtree(self.sessions / sid, ignore_errors=True)
        with self._lock:
            for folder, owners in list(self._cached.items()):
                owners.discard(sid)
                if not owners:
                    shutil.rmtree(folder, ignore_errors=True)
                    del self._cached[folder]

    def sweep(self, max_age_s: float) -> list[str]:
        """End the sessions untouched for ``max_age_s`` seconds (a closed tab whose end Gradio missed)."""
        old = []
        now = time.time()
        for d in self.sessions.iterdir() if self.sessions.is_dir() else []:
            newest = max((p.stat().st_mtime for p in d.rglob("*")), default=d.stat().st_mtime)
            if now - max(newest, d.stat().st_mtime) > max_age_s:
                self.end_session(d.name)
                old.append(d.name)
        return old

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def prune_avatars(folder: Path, keep: int, max_age_s: float) -> list[str]:
    """Remove avatars of ``folder`` (``<name>/avatar.pt``) older than ``max_age_s`` and all but the newest
    ``keep - 1`` (room for one more); returns the names removed, oldest first."""
    if not folder.is_dir():
        return []
    found = sorted((d for d in folder.iterdir() if d.is_dir() and not d.is_symlink()), key=lambda d: d.stat().st_mtime)
    now = time.time()
    gone = [d for d in found if now - d.stat().st_mtime > max_age_s]
    rest = [d for d in found if d not in gone]
    gone += rest[: max(0, len(rest) - (keep - 1))]
    for d in gone:
        shutil.rmtree(d, ignore_errors=True)
    return [d.name for d in gone]


def free_name(folder: Path, name: str) -> str:
    """``name``, or ``name-2``, ``name-3``, ... : the first that ``folder`` does not hold."""
    n = 1
    while (folder / (name if n == 1 else f"{name}-{n}")).exists():
        n += 1
    return name if n == 1 else f"{name}-{n}"


def numbered(path: Path) -> Path:
    """A file ``path``, or the first of ``<stem>-2<suffix>``, ``<stem>-3<suffix>``, ... that does not exist
    (the commands' way of not overwriting; :func:`free_name` for folders)."""
    candidate, n = path, 2
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate
