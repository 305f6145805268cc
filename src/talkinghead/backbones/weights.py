"""Registry, resolution, checked loading and download of the pretrained weight files.

Every pretrained network of talkinghead loads a PUBLIC weight file by its PUBLISHED key layout; none is ever
replaced by random weights. This module knows where each file comes from (``REGISTRY``), where it is expected
on disk (``weights_dir``/``resolve``), how to load it into a module with a clear error on any layout mismatch
(``load_state_dict_checked``) and how to fetch it (``python -m talkinghead.backbones.weights download``,
which ``make weights`` runs).

Adding a file: ``register(WeightSpec(name=..., url=..., filename=..., sha256_prefix=...))``.

Where files are looked for, first match wins:

1. an explicit path given to ``resolve(name, path=...)`` (a config value such as ``loss.vgg19_weights``);
2. ``<dir>/<filename>`` where ``<dir>`` is the ``weights_dir`` argument, else ``$TALKINGHEAD_WEIGHTS``,
   else ``weights/`` relative to the current working directory.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

ENV_VAR = "TALKINGHEAD_WEIGHTS"
DEFAULT_DIR = Path("weights")


@dataclass(frozen=True)
class WeightSpec:
    """One public weight file.

    Attributes:
        name: registry key (``"vgg19"``).
        url: the official download address.
        filename: the file name it is stored under (the published one).
        sha256: full SHA-256 hex digest when one is published, else ``None``.
        sha256_prefix: the leading hex digits of the SHA-256 that the published file name carries
            (torch.hub's ``name-<prefix>.pth`` convention), else ``None``.
        description: one line for ``list``.
    """

    name: str
    url: str
    filename: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    description: str = ""

    def checks(self) -> str:
        """What the download is verified against, in words."""
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.sha256_prefix:
            return f"sha256 prefix {self.sha256_prefix}"
        return "no published checksum (key layout is checked when loaded)"


REGISTRY: dict[str, WeightSpec] = {}


def register(spec: WeightSpec, *, replace: bool = False) -> WeightSpec:
    """Add ``spec`` to the registry; a second spec of the same name needs ``replace=True``."""
    if spec.name in REGISTRY and not replace:
        raise ValueError(f"weight file {spec.name!r} is already registered; pass replace=True to override it")
    REGISTRY[spec.name] = spec
    return spec


# torchvision's ImageNet VGG19 (hash prefix in the name is torch.hub's sha256 prefix).
register(WeightSpec(
    name="vgg19",
    url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    filename="vgg19-dcbb9e9d.pth",
    sha256_prefix="dcbb9e9d",
    description="torchvision VGG19 (ImageNet), for the content loss",
))
# Albanie's MatConvNet->PyTorch conversion of Parkhi et al.'s VGG-Face (VGG16 layout, 2622 identities).
register(WeightSpec(
    name="vggface",
    url="https://www.robots.ox.ac.uk/~albanie/models/pytorch-mcn/vgg_face_dag.pth",
    filename="vgg_face_dag.pth",
    description="VGG-Face (vgg_face_dag, pytorch-mcn), for the content loss",
))
# The TF 2015-12-05 Inception graph ported by pytorch-fid; the FID reference network.
register(WeightSpec(
    name="inception_fid",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth",
    filename="pt_inception-2015-12-05-6726825d.pth",
    sha256_prefix="6726825d",
    description="pytorch-fid InceptionV3 (TF 2015-12-05 graph), for FID",
))


class MissingWeightsError(FileNotFoundError):
    """A pretrained weight file is not on disk."""


class WeightLayoutError(RuntimeError):
    """A weight file's keys or shapes are not the published layout the network expects."""


class ChecksumError(RuntimeError):
    """A downloaded file's SHA-256 is not the published one."""


class DownloadError(RuntimeError):
    """A weight file could not be fetched (no network, bad URL, HTTP error)."""


def get_spec(name: str) -> WeightSpec:
    """The registry entry ``name``; a clear ``KeyError`` listing the known names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown weight file {name!r}; known: {', '.join(sorted(REGISTRY))}") from None


def weights_dir(directory: str | os.PathLike[str] | None = None) -> Path:
    """The directory weight files live in: ``directory``, else ``$TALKINGHEAD_WEIGHTS``, else ``weights/``."""
    if directory is not None and str(directory) != "":
        return Path(directory).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DIR


def resolve(
    name: str,
    path: str | os.PathLike[str] | None = None,
    *,
    config_key: str | None = None,
    directory: str | os.PathLike[str] | None = None,
) -> Path:
    """The on-disk path of weight file ``name``.

    Args:
        name: registry key.
        path: an explicit file path (wins over the directory lookup).
        config_key: the config key that turns off the term needing this file (named in the error).
        directory: the weights directory (see ``weights_dir``).

    Raises:
        MissingWeightsError: the file is absent; the one-line message names the file, the path tried,
            ``make weights`` and ``config_key``.
    """
    spec = get_spec(name)
    candidate = Path(path).expanduser() if path is not None and str(path) != "" else (
        weights_dir(directory) / spec.filename)
    if candidate.is_file():
        return candidate
    off = f", or set {config_key}=0 to turn that term off" if config_key else ""
    raise MissingWeightsError(
        f"pretrained weights {spec.filename!r} ({name}) not found at {candidate.absolute()}: run `make weights` "
        f"(or `python -m talkinghead.backbones.weights download --only {name}`), or give the file's path"
        f"{off}"
    )


def _first(items: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


def read_state_dict(path: str | os.PathLike[str], name: str) -> dict[str, torch.Tensor]:
    """Load a weight file as a flat ``{key: tensor}`` dict on the CPU (``weights_only``: no code runs)."""
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt / truncated / not a torch file
        raise WeightLayoutError(
            f"could not read {name} weights from {path}: {type(exc).__name__}: {exc}; "
            f"delete it and run `make weights` again") from exc
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightLayoutError(
            f"{path} is not a state dict of tensors (got {type(obj).__name__}); expected the published "
            f"{get_spec(name).filename if name in REGISTRY else name} file")
    return {str(k): v for k, v in obj.items()}


def load_state_dict_checked(
    module: nn.Module,
    path: str | os.PathLike[str],
    name: str,
    *,
    drop: Mapping[str, tuple[int, ...]] | None = None,
) -> nn.Module:
    """Load the weight file ``path`` into ``module``, refusing any layout mismatch.

    Args:
        module: the network, whose ``state_dict`` keys are the published ones.
        path: the weight file.
        name: registry key, for messages.
        drop: keys the published file has that ``module`` deliberately does not hold (e.g. a classifier
            head the feature extractor never runs), with their published shapes. They must be present
            with those shapes (so a wrong file is still caught) and are then discarded.

    ``*.num_batches_tracked`` entries are optional (files saved before PyTorch 0.4.1 lack them).

    Raises:
        WeightLayoutError: missing / unexpected keys or wrong shapes; lists the first few of each.
    """
    state = read_state_dict(path, name)
    drop = dict(drop or {})
    problems: list[str] = []

    absent_drop = [k for k in drop if k not in state]
    bad_drop = [f"{k} {tuple(state[k].shape)}!={tuple(s)}" for k, s in drop.items()
                if k in state and tuple(state[k].shape) != tuple(s)]
    for k in drop:
        state.pop(k, None)

    expected = module.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)}!={tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or absent_drop:
        problems.append(f"missing keys: {_first(missing + absent_drop)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if wrong or bad_drop:
        problems.append(f"wrong shapes (file!=network): {_first(wrong + bad_drop)}")
    if problems:
        raise WeightLayoutError(
            f"{path} does not have the published {name} key layout ({'; '.join(problems)}); "
            f"is it the right file? re-download it with `make weights`")
    for k in optional:
        if k not in state:
            state[k] = expected[k]
    module.load_state_dict(state, strict=True)
    return module


# ----------------------------------------------------------------------------------------------- download


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(spec: WeightSpec, digest: str, where: str) -> None:
    """Raise ``ChecksumError`` when ``digest`` (sha256 hex) is not the published one of ``spec``."""
    if spec.sha256 and digest.lower() != spec.sha256.lower():
        raise ChecksumError(f"{where}: sha256 {digest} != published {spec.sha256} for {spec.filename}; "
                            f"the download is corrupt or not the official file")
    if spec.sha256_prefix and not digest.lower().startswith(spec.sha256_prefix.lower()):
        raise ChecksumError(f"{where}: sha256 {digest[:16]}... does not start with {spec.sha256_prefix} "
                            f"(the hash in the name {spec.filename}); the download is corrupt or not the "
                            f"official file")


def download(
    spec: WeightSpec,
    directory: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Fetch ``spec.url`` into ``<directory>/<spec.filename>``, verifying its checksum; atomic.

    The bytes go to a temporary file in the same directory, which is renamed onto the final name only
    after the checksum matched, so an interrupted or corrupt download never leaves a file that looks done.
    An existing file is kept (and its checksum checked) unless ``force``.

    Raises:
        DownloadError: no network / HTTP error / unreachable host.
        ChecksumError: the bytes are not the published file.
    """
    from tqdm import tqdm

    out_dir = weights_dir(directory)
    target = out_dir / spec.filename
    if target.is_file() and not force:
        try:
            verify_checksum(spec, _sha256(target), str(target))
        except ChecksumError as exc:
            raise ChecksumError(f"{exc.args[0]}; delete it or download again with --force") from None
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=out_dir)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        try:
            request = urllib.request.Request(spec.url, headers={"User-Agent": "talkinghead-weights"})
            with os.fdopen(fd, "wb") as fh, urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=spec.filename, disable=not progress) as bar:
                    for chunk in iter(lambda: response.read(1 << 20), b""):
                        fh.write(chunk)
                        digest.update(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"could not download {spec.filename} from {spec.url}: {reason}; without internet access, "
                f"fetch that URL elsewhere and copy the file to {target}") from exc
        verify_checksum(spec, digest.hexdigest(), spec.url)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target


def _cmd_list(args: argparse.Namespace) -> int:
    directory = weights_dir(args.dir)
    print(f"weights directory: {directory.resolve()}")
    for spec in REGISTRY.values():
        path = directory / spec.filename
        state = "present" if path.is_file() else "MISSING"
        print(f"{spec.name:<16} {state:<8} {path}  <- {spec.url}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    names = args.only or list(REGISTRY)
    failed = 0
    for name in names:
        try:
            spec = get_spec(name)
            path = download(spec, args.dir, force=args.force, progress=not args.quiet)
        except (KeyError, DownloadError, ChecksumError) as exc:
            print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            failed += 1
            continue
        note = "" if (spec.sha256 or spec.sha256_prefix) else f" (unverified: sha256 {_sha256(path)})"
        print(f"ok: {name} -> {path}{note}")
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m talkinghead.backbones.weights {download,list} [--dir DIR] [--only NAME ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m talkinghead.backbones.weights",
        description="Fetch or list the pretrained weight files talkinghead uses.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_dl = sub.add_parser("download", help="download (and checksum) the weight files")
    p_dl.add_argument("--dir", default=None, help=f"target directory (default: ${ENV_VAR} or weights/)")
    p_dl.add_argument("--only", action="append", choices=sorted(REGISTRY), help="only this file (repeatable)")
    p_dl.add_argument("--force", action="store_true", help="download even if the file is present")
    p_dl.add_argument("--quiet", action="store_true", help="no progress bar")
    p_dl.set_defaults(func=_cmd_download)
    p_ls = sub.add_parser("list", help="show each file, whether it is present, and its path")
    p_ls.add_argument("--dir", default=None, help=f"weights directory (default: ${ENV_VAR} or weights/)")
    p_ls.set_defaults(func=_cmd_list)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
