"""The model interface: what every stage asks of a model's networks, written once.

A model is three networks, each named by ``_target_`` in the ``model`` config group (``experiments/model/``):

- the **embedder** turns K frames and their landmark images into the person's identity ê;
- the **generator** makes the person's parameters ψ from ê (``project``), renders landmark images with them
  (``forward(y, psi=ψ)``), gives a frozen copy for rendering (``inference_copy``) and a network with one
  person's ψ folded in (``folded``: what ``make export`` writes as ONNX);
- the **discriminator** scores frames under landmarks against one W row per training video (the paper's
  projection discriminator; fine-tuning scores with w' = w0 + ê_new).

Meta-learning, fine-tuning, avatar files, rendering, reenactment, export, evaluation, ``make bench`` and
``make gpu-check`` use only the members listed here, so a second model is its own file and its config
(``tests/toy_model.py`` is one).  What a member does is in its Protocol's docstring; shapes use B batch, K shots,
S image side, n = the length of ψ.  A class that lacks a member is refused before anything is built
(:func:`check_model_config`), naming what is missing.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from talkinghead.errors import ConfigError


@runtime_checkable
class PersonEmbedder(Protocol):
    """E: ``embed_frames(x (B,K,3,S,S), y (B,K,3,S,S)) -> (B, K, emb_dim)`` the per-frame embeddings (the match term
    compares them with W rows); ``embed(x, y) -> (B, emb_dim)`` the person's ê (the paper: their mean)."""

    image_size: int
    emb_dim: int

    def embed_frames(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def embed(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class PersonGenerator(Protocol):
    """G: ``project(ê (B, emb_dim)) -> ψ (B, n)``, the person's parameters (the paper: AdaIN's, ψ = P ê);
    ``forward(y (B,3,S,S), e (B, emb_dim) | None, psi (B, n) | (n,) | None) -> (B,3,S,S)`` in [-1, 1], from ê or
    from ψ directly (a fine-tuned avatar's ψ'); ``inference_copy() -> nn.Module`` a frozen copy with the same
    ``forward`` and the same frames, laid out for speed (rendering bakes it once per avatar);
    ``folded(psi (n,)) -> nn.Module`` a frozen network ``forward(y (B,3,S,S)) -> (B,3,S,S)`` with ψ folded in and
    an ``image_size`` attribute, in operations the ONNX exporter takes (``make export``)."""

    image_size: int
    emb_dim: int

    def project(self, e: torch.Tensor) -> torch.Tensor: ...

    def forward(self, y: torch.Tensor, e: torch.Tensor | None = None, psi: torch.Tensor | None = None
                ) -> torch.Tensor: ...

    def inference_copy(self) -> nn.Module: ...

    def folded(self, psi: torch.Tensor) -> nn.Module: ...


@runtime_checkable
class PersonDiscriminator(Protocol):
    """D: ``forward(x, y, video_index (B,) | None, w (B, emb) | (emb,) | None) -> (score (B,), features [tensors])``;
    ``w_rows(video_index) -> (B, emb_dim)`` the W rows; ``w0`` the shared projection (emb_dim,); ``w_table`` the
    table's parameter and ``sparse_w`` whether its gradients are sparse (the optimiser is chosen by it)."""

    emb_dim: int

    def w_rows(self, video_index: torch.Tensor) -> torch.Tensor: ...

    def forward(self, x: torch.Tensor, y: torch.Tensor, video_index: torch.Tensor | None = None,
                w: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]: ...


#: the model config's network entries and the Protocol each must meet
ROLES: dict[str, type] = {"embedder": PersonEmbedder, "generator": PersonGenerator,
                          "discriminator": PersonDiscriminator}


def _members(protocol: type) -> tuple[list[str], list[str]]:
    """(methods, attributes) a Protocol declares: attributes are set on instances, so a class can show only its
    methods."""
    methods = [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
    attributes = list(getattr(protocol, "__annotations__", {}))
    return sorted(set(methods)), attributes


def missing_methods(cls: type, protocol: type) -> list[str]:
    """The methods of ``protocol`` that class ``cls`` lacks."""
    methods, _ = _members(protocol)
    return [m for m in methods if not callable(getattr(cls, m, None))]


def missing_members(net: Any, protocol: type) -> list[str]:
    """The methods and attributes of ``protocol`` that the built network ``net`` lacks."""
    methods, attributes = _members(protocol)
    return [m for m in methods if not callable(getattr(net, m, None))] + [
        a for a in attributes if not hasattr(net, a)]


def locate(target: str) -> Any:
    """The object a dotted ``_target_`` names (``package.module.Class``), as Hydra finds it, without its logging."""
    parts = target.split(".")
    if not all(p.isidentifier() for p in parts):
        raise ValueError(f"{target!r} is not a dotted name")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as exc:
            if exc.name is None or not ".".join(parts[:i]).startswith(exc.name):
                raise  # a module that exists but fails to import: its own error
            continue
        for name in parts[i:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"no module {parts[0]!r}")


def _nested_targets(node: Any, path: str) -> list[str]:
    """Keys under ``node`` that would make Hydra call something besides the network class itself."""
    if isinstance(node, Mapping):  # dict and DictConfig
        items = node.items()
    elif isinstance(node, Sequence) and not isinstance(node, str):  # list and ListConfig
        items = enumerate(node)
    else:
        return []
    found = []
    for key, value in items:
        if str(key) in ("_target_", "_args_", "_partial_"):
            found.append(f"{path}.{key}")
        found += _nested_targets(value, f"{path}.{key}")
    return found


def check_model_config(model_cfg: Mapping[str, Any]) -> None:
    """Refuse a ``model`` config whose embedder, generator or discriminator class lacks part of the interface, in one
    line naming the class and what it lacks, before anything is built.

    Each ``_target_`` must name an ``nn.Module`` class, called with keyword values only (no ``_args_``, no nested
    ``_target_``): a checkpoint's saved config is built by :func:`talkinghead.inference.avatar.load_meta_learned`, so a crafted
    one must not get any other call out of Hydra (``_target_: subprocess.getoutput`` and the like)."""
    for role, protocol in ROLES.items():
        node = model_cfg.get(role) if hasattr(model_cfg, "get") else None
        target = node.get("_target_") if node is not None and hasattr(node, "get") else None
        if not target:
            raise ConfigError(f"model.{role} has no _target_: name the {role} class (see experiments/model/)")
        extra = [k for k in _nested_targets(node, f"model.{role}") if k != f"model.{role}._target_"]
        if extra:
            raise ConfigError(f"model.{role}: {', '.join(extra)} not allowed: a network is its class called with "
                              "keyword values")
        try:
            cls = locate(str(target))
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"model.{role}._target_={target}: cannot import it ({exc})") from exc
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ConfigError(f"model.{role}._target_={target} is not a torch.nn.Module class")
        lacks = missing_methods(cls, protocol)
        if lacks:
            raise ConfigError(f"model.{role}._target_={target} lacks {', '.join(lacks)} of the model interface "
                              f"({protocol.__name__}, talkinghead.nets.interface)")


def check_built(role: str, net: Any) -> Any:
    """``net`` if it has every member of ``role``'s Protocol (attributes too), else a one-line ConfigError."""
    lacks = missing_members(net, ROLES[role])
    if lacks:
        raise ConfigError(f"model.{role} ({type(net).__name__}) lacks {', '.join(lacks)} of the model interface "
                          f"({ROLES[role].__name__}, talkinghead.nets.interface)")
    return net


__all__ = ["PersonDiscriminator", "PersonEmbedder", "PersonGenerator", "ROLES", "check_built", "check_model_config",
           "missing_members", "missing_methods"]
