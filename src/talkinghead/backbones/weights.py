"""Registry, resolution, checked loading and download of the pretrained weight files.

Every pretrained network of talkinghead loads a PUBLIC weight file by its PUBLISHED key layout; none is ever
replaced by random weights. This module knows where each file comes from (``REGISTRY``), where it is expected
on disk (``weights_dir``/``resolve``), how to load it into a module with a clear error on any layout mismatch
(``load_state_dict_checked``, from ``loading``) and how to fetch it (``python -m talkinghead.backbones.weights download``,
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .inception import FIDInceptionV3
from .loading import (  # noqa: F401 - re-exported: the loading API has always been importable from here
    MissingWeightsError,
    WeightLayoutError,
    layout_problems,
    load_state_dict_checked,
    read_state_dict,
    shapes,
)
from .vgg19 import PUBLISHED_FILENAMES, VGG19
from .vggface import VGGFace

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
        mirrors: further addresses of the same file, tried in order when ``url`` fails.
        network: builds the network in the file's FULL published layout (classifier heads included); a file
            without a published checksum is checked against it when downloaded (``verify_layout``).
    """

    name: str
    url: str
    filename: str
    sha256: str | None = None
    sha256_prefix: str | None = None
    description: str = ""
    mirrors: tuple[str, ...] = ()
    network: Callable[[], nn.Module] | None = None

    @property
    def has_checksum(self) -> bool:
        return bool(self.sha256 or self.sha256_prefix)

    def checks(self) -> str:
        """What the download is verified against, in words."""
        if self.sha256:
            return f"sha256 {self.sha256}"
        if self.sha256_prefix:
            return f"sha256 prefix {self.sha256_prefix}"
        if self.network is not None:
            return "no published checksum: the published key layout is checked"
        return "no published checksum (key layout is checked when loaded)"


REGISTRY: dict[str, WeightSpec] = {}


def register(spec: WeightSpec, *, replace: bool = False) -> WeightSpec:
    """Add ``spec`` to the registry; a second spec of the same name needs ``replace=True``."""
    if spec.name in REGISTRY and not replace:
        raise ValueError(f"weight file {spec.name!r} is already registered; pass replace=True to override it")
    REGISTRY[spec.name] = spec
    return spec


def _vgg19_torchvision() -> nn.Module:
    return VGG19(input_norm="imagenet", include_classifier=True)


def _vgg19_caffe() -> nn.Module:
    return VGG19(input_norm="caffe", include_classifier=True)


def _vggface() -> nn.Module:
    return VGGFace(include_classifier=True)


def _inception_fid() -> nn.Module:
    return FIDInceptionV3()


# The Caffe VGG19 of the VGG group (VGG_ILSVRC_19_layers.caffemodel) as converted by J. Johnson
# (github.com/jcjohnson/pytorch-vgg, whose README gives both addresses and the BGR/0-255/mean input); the
# file FSTH's perceptual loss loads. The name's d01eb7cb is its sha256 prefix (the converter names the file
# after `sha256sum`, torch.hub's convention). The paper's content loss (loss=paper) uses it.
register(WeightSpec(
    name="vgg19_caffe",
    url="https://s3-us-west-2.amazonaws.com/jcjohns-models/vgg19-d01eb7cb.pth",
    filename=PUBLISHED_FILENAMES["vgg19_caffe"],
    sha256_prefix="d01eb7cb",
    description="Caffe VGG19 (jcjohnson/pytorch-vgg; BGR 0-255 input), for the paper's content loss",
    mirrors=("https://web.eecs.umich.edu/~justincj/models/vgg19-d01eb7cb.pth",),
    network=_vgg19_caffe,
))
# torchvision's ImageNet VGG19 (hash prefix in the name is torch.hub's sha256 prefix).
register(WeightSpec(
    name="vgg19",
    url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    filename=PUBLISHED_FILENAMES["vgg19"],
    sha256_prefix="dcbb9e9d",
    description="torchvision VGG19 (ImageNet input), for loss.vgg19_input_norm=imagenet",
    network=_vgg19_torchvision,
))
# Albanie's MatConvNet->PyTorch conversion of Parkhi et al.'s VGG-Face (VGG16 layout, 2622 identities).
# No checksum is published for it: a download is accepted only with the published key layout.
register(WeightSpec(
    name="vggface",
    url="https://www.robots.ox.ac.uk/~albanie/models/pytorch-mcn/vgg_face_dag.pth",
    filename="vgg_face_dag.pth",
    description="VGG-Face (vgg_face_dag, pytorch-mcn), for the content loss",
    network=_vggface,
))
# The TF 2015-12-05 Inception graph ported by pytorch-fid; the FID reference network.
register(WeightSpec(
    name="inception_fid",
    url="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
        "pt_inception-2015-12-05-6726825d.pth",
    filename="pt_inception-2015-12-05-6726825d.pth",
    sha256_prefix="6726825d",
    description="pytorch-fid InceptionV3 (TF 2015-12-05 graph), for FID",
    network=_inception_fid,
))


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


def published_layout(name: str) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the published file ``name`` (its network built on the meta device: no memory)."""
    spec = get_spec(name)
    if spec.network is None:
        raise KeyError(f"no published key layout is declared for {name!r}")
    with torch.device("meta"):
        net = spec.network()
    return shapes(net.state_dict())


def verify_layout(path: str | os.PathLike[str], name: str) -> None:
    """Raise ``WeightLayoutError`` unless the file at ``path`` has the published key layout of ``name``.

    Reads the file memory-mapped where its format allows (a 500 MB file is not copied into memory).
    """
    try:
        obj = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
        state = {str(k): v for k, v in obj.items()} if isinstance(obj, Mapping) else None
        if state is None or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError("not a state dict")
    except Exception:  # legacy (pre-zip) format or not a state dict: read_state_dict says which
        state = read_state_dict(path, name)
    problems = layout_problems(shapes(state), published_layout(name))
    if problems:
        raise WeightLayoutError(
            f"{path} does not have the published {name} key layout ({'; '.join(problems)})")


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


def _fetch(url: str, tmp: Path, fd: int | None, filename: str, timeout: float, progress: bool) -> str:
    """Stream ``url`` into ``tmp`` (or its open ``fd``); returns the bytes' sha256 hex digest."""
    from tqdm import tqdm

    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "talkinghead-weights"})
    out = os.fdopen(fd, "wb") if fd is not None else tmp.open("wb")
    with out as fh, urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=filename,
                  disable=not progress) as bar:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                fh.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def _check_unverified(spec: WeightSpec, path: Path, where: str) -> None:
    """For a file without a published checksum: its key layout must be the published one."""
    if spec.has_checksum or spec.network is None:
        return
    try:
        verify_layout(path, spec.name)
    except WeightLayoutError as exc:
        raise WeightLayoutError(f"{where}: {exc.args[0]}; no checksum is published for {spec.filename}, "
                                f"so its key layout is what proves it is the official file") from None


def download(
    spec: WeightSpec,
    directory: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Fetch ``spec.url`` (else its ``mirrors``) into ``<directory>/<spec.filename>``, verified; atomic.

    The bytes go to a temporary file in the same directory, which is renamed onto the final name only
    after they passed the check: the published checksum, or, for a file without one (``vgg_face_dag.pth``),
    the published key layout (``verify_layout``). So an interrupted, corrupt or wrong download never leaves
    a file that looks done. An existing file is kept (and checked the same way) unless ``force``; an
    existing file without a checksum whose layout is wrong is moved aside to ``<name>.rejected``.

    Raises:
        DownloadError: no network / HTTP error / unreachable host, at every address.
        ChecksumError: the bytes are not the published file.
        WeightLayoutError: a file without a published checksum does not have the published key layout.
    """
    out_dir = weights_dir(directory)
    target = out_dir / spec.filename
    if target.is_file() and not force:
        try:
            verify_checksum(spec, _sha256(target), str(target))
        except ChecksumError as exc:
            raise ChecksumError(f"{exc.args[0]}; delete it or download again with --force") from None
        try:
            _check_unverified(spec, target, str(target))
        except WeightLayoutError as exc:
            aside = target.with_name(target.name + ".rejected")
            os.replace(target, aside)
            raise WeightLayoutError(f"{exc.args[0]}; moved it aside to {aside}, run `make weights` "
                                    f"again") from None
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    urls = (spec.url, *spec.mirrors)
    failures: list[str] = []
    for i, url in enumerate(urls):
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=out_dir)
        tmp = Path(tmp_name)
        try:
            try:
                digest = _fetch(url, tmp, fd, spec.filename, timeout, progress)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                failures.append(f"{url}: {getattr(exc, 'reason', exc)}")
                if i + 1 < len(urls):
                    continue
                raise DownloadError(
                    f"could not download {spec.filename} from {'; '.join(failures)}; without internet "
                    f"access, fetch that URL elsewhere and copy the file to {target}") from exc
            verify_checksum(spec, digest, url)
            _check_unverified(spec, tmp, url)
            os.replace(tmp, target)
            return target
        finally:
            if tmp.exists():
                tmp.unlink()
    raise DownloadError(f"could not download {spec.filename}: no address")  # unreachable: urls is never empty


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
        except (KeyError, DownloadError, ChecksumError, WeightLayoutError) as exc:
            print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            failed += 1
            continue
        note = "" if spec.has_checksum else f" ({spec.checks()}; sha256 {_sha256(path)})"
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
