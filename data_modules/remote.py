"""Shard folders on remote storage: ``data.root`` as a URL.

A data root may be

* a local folder (``/data/vox2-shards``),
* an ``http://`` or ``https://`` URL of a folder served over HTTP (``https://host/vox2-shards/``),
* any URL fsspec opens (``s3://bucket/vox2-shards``, ``gs://...``, ``hf://...``; the matching fsspec package,
  e.g. s3fs or gcsfs, must be installed),
* a WebDataset ``pipe:`` command with ``{}`` where the file name goes
  (``pipe:aws s3 cp s3://bucket/vox2-shards/{} -``): its standard output is the file.

Files are opened with the libraries' own openers: fsspec for URLs (HTTP streams without range requests), and
WebDataset's ``gopen`` for ``pipe:``. Training streams the shards. Fine-tuning and evaluation need random access
to a few videos: the shards holding them are fetched whole into a local cache, checked, then renamed into place
(``$TALKINGHEAD_CACHE``, default ``~/.cache/talkinghead``; the first fetch says where).

Every failure (unreachable host, a missing file, a truncated shard) is a ``RemoteError`` naming the file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path
from typing import IO

from talkinghead.errors import TalkingHeadError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class ShardError(TalkingHeadError, OSError):
    """A shard cannot be read whole (the message names it)."""

    def __str__(self) -> str:
        # Raised in a DataLoader worker, PyTorch re-raises it with the worker's whole traceback as the message:
        # keep the one line that says what went wrong.
        text = super().__str__()
        if "Original Traceback" in text:
            last = [ln for ln in text.strip().splitlines() if ln.strip()][-1]
            return last.split(f"{type(self).__name__}: ", 1)[-1]
        return text


class RemoteError(ShardError):
    """A remote file of a data root cannot be read (the message names it)."""


def is_remote(root: str | os.PathLike | None) -> bool:
    """Whether ``root`` is a URL or ``pipe:`` command rather than a local path (``file://`` is local)."""
    text = str(root or "")
    return text.startswith("pipe:") or (bool(_SCHEME.match(text)) and not text.startswith("file://"))


def local_path(root: str | os.PathLike) -> Path:
    """A local root as a ``Path`` (``file://`` stripped, ``~`` expanded)."""
    text = str(root)
    return Path(text[len("file://"):] if text.startswith("file://") else text).expanduser()


def join(root: str, name: str) -> str:
    """URL of file ``name`` of a remote root (``{}`` of a ``pipe:`` command is replaced by it)."""
    if root.startswith("pipe:"):
        if "{}" not in root:
            raise RemoteError(f"pipe: data root {root!r} needs {{}} where the file name goes, e.g. "
                              "'pipe:aws s3 cp s3://bucket/vox2-shards/{} -'")
        return root.replace("{}", name)
    return root.rstrip("/") + "/" + name


def open_url(url: str) -> IO[bytes]:
    """A readable binary stream of ``url`` (fsspec; WebDataset's gopen for ``pipe:``), or a ``RemoteError``."""
    try:
        if url.startswith("pipe:"):
            from webdataset.gopen import gopen

            return gopen(url, "rb")
        import fsspec

        options = {"block_size": 0} if url.startswith(("http://", "https://")) else {}  # plain streaming GET
        return fsspec.open(url, "rb", **options).open()
    except FileNotFoundError as exc:
        raise RemoteError(f"{url} not found (404): {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - any transport error: name the file, keep the reason
        raise RemoteError(f"cannot fetch {url}: {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def read_bytes(url: str) -> bytes:
    """The whole of a (small) remote file, e.g. ``manifest.json``."""
    with open_url(url) as fh:
        try:
            return fh.read()
        except Exception as exc:  # noqa: BLE001
            raise RemoteError(f"cannot fetch {url}: {_reason(exc)}") from exc


def cache_root() -> Path:
    """Where remote shards are cached: ``$TALKINGHEAD_CACHE`` or ``~/.cache/talkinghead``, under ``shards/``."""
    return Path(os.environ.get("TALKINGHEAD_CACHE") or Path.home() / ".cache" / "talkinghead").expanduser() / "shards"


def cache_dir(root: str) -> Path:
    """The cache folder of one remote root (named by a hash of its URL)."""
    return cache_root() / hashlib.sha1(root.encode()).hexdigest()[:16]


_ANNOUNCED: set[str] = set()


def fetch_shard(root: str, name: str) -> Path:
    """Local copy of shard ``name`` of remote ``root``: downloaded once into the cache, checked to be a whole tar
    (a truncated or failed download leaves nothing behind), then renamed into place."""
    folder = cache_dir(root)
    dest = folder / name
    if dest.is_file():
        return dest
    folder.mkdir(parents=True, exist_ok=True)
    if root not in _ANNOUNCED:
        _ANNOUNCED.add(root)
        print(f"fetching shards of {root} into the local cache {folder} (set TALKINGHEAD_CACHE to move it)",
              file=sys.stderr)
    url = join(root, name)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")
    try:
        with open_url(url) as src, open(tmp, "wb") as out:
            try:
                shutil.copyfileobj(src, out, 1 << 20)
            except Exception as exc:  # noqa: BLE001
                raise RemoteError(f"remote shard {url} broke off: {_reason(exc)}") from exc
        try:
            with tarfile.open(tmp, "r:") as tar:
                members = tar.getmembers()
                last = members[-1] if members else None
            if last is None or last.offset_data + last.size > tmp.stat().st_size:
                raise tarfile.ReadError("unexpected end of data")
        except tarfile.TarError as exc:
            raise RemoteError(f"remote shard {url} is truncated or not a tar ({exc})") from exc
        os.replace(tmp, dest)
        return dest
    finally:
        tmp.unlink(missing_ok=True)
