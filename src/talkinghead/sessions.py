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

:class:`Limits` bound what clients can leave behind: a session with no client activity for ``idle_s`` is
ended (its folder and the cache copies only it was sent go), a new session is refused (:class:`ServerFull`, one
line) beyond ``max_sessions`` or when the server's folder holds ``max_disk_mb``, and an upload in Gradio's cache
that no session claimed (no job used it, none waits in the queue) goes after ``upload_idle_s``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from talkinghead.errors import TalkingHeadError

PREFIX = "talkinghead-demo-"
MARK = "server.pid"


class ServerFull(TalkingHeadError, RuntimeError):
    """A new session or upload over the server's limits (:class:`Limits`)."""


@dataclass
class Limits:
    """What the clients of one server may hold (docs/demo.md states the defaults)."""

    idle_s: float = 900.0  # a session with no client activity this long is ended
    max_sessions: int = 16  # sessions with a folder at once
    max_disk_mb: float = 10240.0  # the server's folder (sessions + Gradio's cache): no new session or upload beyond
    upload_idle_s: float = 600.0  # an upload no session claimed is removed this long after it arrived
    sweep_s: float = 0.0  # how often the sweeper looks (0: a quarter of the shorter age, 0.2 s to a minute)

    def __post_init__(self) -> None:
        if self.sweep_s <= 0:
            self.sweep_s = max(0.2, min(60.0, min(self.idle_s, self.upload_idle_s) / 4))


def folder_bytes(root: Path) -> int:
    """Bytes of the regular files under ``root`` (symlinks not followed)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue  # removed meanwhile
            total += st.st_size
    return total


def _newest(path: Path) -> float:
    """The newest mtime of ``path`` and what it holds (0 when it is gone)."""
    try:
        newest = path.lstat().st_mtime
    except OSError:
        return 0.0
    for dirpath, dirs, files in os.walk(path):
        for f in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, f)).st_mtime)
            except OSError:
                continue
    return newest


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
    removed when this one was made; ``limits``: what its clients may hold."""

    def __init__(self, base: str | os.PathLike[str] | None = None, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
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
        self._lock = threading.RLock()  # handlers, page loads and unloads run on Gradio's worker threads
        self._seen: dict[str, float] = {}  # session -> time of its client's last activity (sessions with a folder)
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    def session(self, sid: str) -> Path:
        """The session's folder, made (and the session admitted) if it has none: :class:`ServerFull` when that
        would exceed ``max_sessions`` or the disk limit.  Counts as the client's activity."""
        d = self.sessions / sid
        with self._lock:
            if not d.is_dir():
                self._admit()
                d.mkdir(parents=True, exist_ok=True)
            self._seen[sid] = time.time()
        return d

    def touch(self, sid: str) -> None:
        """Note the client's activity (a request of the page, a job) for a session that has a folder."""
        with self._lock:
            if sid in self._seen or (self.sessions / sid).is_dir():
                self._seen[sid] = time.time()

    def count(self) -> int:
        """Sessions with a folder."""
        return sum(1 for d in self.sessions.iterdir() if d.is_dir()) if self.sessions.is_dir() else 0

    def usage_mb(self) -> float:
        """MB in the server's folder: sessions and Gradio's cache (uploads included)."""
        return folder_bytes(self.root) / 2**20

    def check_disk(self) -> None:
        """:class:`ServerFull` when the server's folder holds its disk limit."""
        used, cap = self.usage_mb(), self.limits.max_disk_mb
        if used >= cap:
            raise ServerFull(f"the server is full: its sessions hold {used:.0f} MB, its limit is {cap:g} MB; "
                             "try again later")

    def _admit(self) -> None:
        n, cap = self.count(), self.limits.max_sessions
        if n >= cap:
            raise ServerFull(f"the server is full: {n} sessions at once, its limit; try again in a few minutes")
        self.check_disk()

    def remember_cached(self, sid: str, paths: Iterable[str | os.PathLike[str] | None]) -> None:
        """Note the Gradio cache folders of files a session uploaded or was sent (removed at its end)."""
        from gradio.processing_utils import hash_file

        for p in paths:
            if not p:
                continue
            p = Path(p)
            folder = self._cache_folder(p)
            try:
                if folder is None and p.is_file():  # a file the page sends: Gradio copies it to <cache>/<hash>/
                    folder = self.gradio / hash_file(p)
            except OSError:
                continue
            if folder is None:
                continue
            with self._lock:
                self._cached.setdefault(folder, set()).add(sid)

    def _cache_folder(self, p: str | os.PathLike[str]) -> Path | None:
        """The top folder in Gradio's cache that ``p`` lies in, else None."""
        try:
            rel = Path(p).resolve().relative_to(self.gradio.resolve())
            return self.gradio / rel.parts[0] if rel.parts else None
        except (OSError, ValueError):
            return None

    def drop_cached(self, sid: str, paths: Iterable[str | os.PathLike[str] | None],
                    keep: Iterable[str | os.PathLike[str]] = ()) -> None:
        """Remove the cache copies of ``paths`` (a failed job's uploads) that no other session claimed, except
        those holding ``keep`` (files another session's queued job names)."""
        spared = {f for f in (self._cache_folder(k) for k in keep) if f is not None}
        with self._lock:
            for p in paths:
                folder = self._cache_folder(p) if p else None
                if folder is None or folder in spared:
                    continue
                owners = self._cached.get(folder, set())
                owners.discard(sid)
                if not owners:
                    shutil.rmtree(folder, ignore_errors=True)
                    self._cached.pop(folder, None)

    def end_session(self, sid: str) -> None:
        """Remove a session's folder and the cache copies no other session shares."""
        with self._lock:
            shutil.rmtree(self.sessions / sid, ignore_errors=True)
            self._seen.pop(sid, None)
            for folder, owners in list(self._cached.items()):
                owners.discard(sid)
                if not owners:
                    shutil.rmtree(folder, ignore_errors=True)
                    del self._cached[folder]

    def sweep(self, busy: Iterable[str] = (), keep: Iterable[str | os.PathLike[str]] = ()) -> list[str]:
        """End the sessions with no client activity for ``limits.idle_s`` (a closed tab whose end Gradio missed,
        a plain HTTP client gone), except the ``busy`` ones (a job waiting or running); remove the cache folders
        older than ``limits.upload_idle_s`` that no session claimed, except those holding ``keep`` (files a
        queued job names, live frames).  Returns the sessions ended."""
        now = time.time()
        ended = []
        busy = set(busy)
        with self._lock:  # a snapshot; the folder walks below run outside the lock that every request takes
            dirs = list(self.sessions.iterdir()) if self.sessions.is_dir() else []
            seen, claimed = dict(self._seen), set(self._cached)
            for name in busy:
                self._seen[name] = now
        for d in dirs:
            if d.name in busy:
                continue
            last = seen[d.name] if d.name in seen else _newest(d)  # made outside session(): its files say
            if now - last <= self.limits.idle_s:
                continue
            with self._lock:
                if now - self._seen.get(d.name, last) > self.limits.idle_s:  # no request came meanwhile
                    self.end_session(d.name)
                    ended.append(d.name)
        spared = {f for f in (self._cache_folder(k) for k in keep) if f is not None}
        entries = list(self.gradio.iterdir()) if self.gradio.is_dir() else []
        old = [e for e in entries
               if e not in claimed and e not in spared and now - _newest(e) > self.limits.upload_idle_s]
        with self._lock:
            for entry in old:
                if entry in self._cached:  # claimed by a session
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:  # a temp file of an upload abandoned halfway (one in progress is newer)
                    entry.unlink(missing_ok=True)
        return ended

    def start_sweeper(self, pending: Callable[[], tuple[set[str], set[str]]] = lambda: (set(), set())) -> None:
        """Sweep every ``limits.sweep_s`` in a daemon thread, until :meth:`remove`; ``pending()`` ->
        (busy sessions, files to keep) as :meth:`sweep` takes them."""
        if self._sweeper is not None:
            return

        def loop() -> None:
            while not self._stop.wait(self.limits.sweep_s):
                try:
                    self.sweep(*pending())
                except Exception as exc:  # noqa: BLE001 - a sweep that fails is retried; the server stays up
                    print(f"session sweep failed: {type(exc).__name__}: {exc}", flush=True)

        self._sweeper = threading.Thread(target=loop, name="talkinghead-sweeper", daemon=True)
        self._sweeper.start()

    def remove(self) -> None:
        self._stop.set()
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
