"""Checked loading of a pretrained weight file into a network: reading it without running code, comparing its
key -> shape layout with the network's, one-line errors that say what the file is and what to do.

The networks (``vgg19``, ``vggface``, ``inception``) load through this module; the registry of public files and
their downloads (``weights``) stands above the networks, which it builds to check a downloaded file's layout.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn


class MissingWeightsError(FileNotFoundError):
    """A pretrained weight file is not on disk."""


class WeightLayoutError(RuntimeError):
    """A weight file's keys or shapes are not the published layout the network expects."""


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
            f"{name} weight file")
    return {str(k): v for k, v in obj.items()}


def layout_problems(
    state: Mapping[str, tuple[int, ...]],
    expected: Mapping[str, tuple[int, ...]],
    *,
    drop: Mapping[str, tuple[int, ...]] | None = None,
) -> list[str]:
    """What keeps the key -> shape map ``state`` from being the layout ``expected`` (+ ``drop``); [] if none.

    ``*.num_batches_tracked`` entries of ``expected`` are optional (files saved before PyTorch 0.4.1 lack them).
    """
    drop = dict(drop or {})
    absent_drop = [k for k in drop if k not in state]
    bad_drop = [f"{k} {tuple(state[k])}!={tuple(s)}" for k, s in drop.items()
                if k in state and tuple(state[k]) != tuple(s)]
    rest = {k: v for k, v in state.items() if k not in drop}
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in rest and k not in optional]
    unexpected = [k for k in rest if k not in expected]
    wrong = [f"{k} {tuple(rest[k])}!={tuple(v)}" for k, v in expected.items()
             if k in rest and tuple(rest[k]) != tuple(v)]
    problems: list[str] = []
    if missing or absent_drop:
        problems.append(f"missing keys: {_first(missing + absent_drop)}")
    if unexpected:
        problems.append(f"unexpected keys: {_first(unexpected)}")
    if wrong or bad_drop:
        problems.append(f"wrong shapes (file!=network): {_first(wrong + bad_drop)}")
    return problems


def shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Key -> shape of a state dict."""
    return {k: tuple(v.shape) for k, v in state.items()}


def load_state_dict_checked(
    module: nn.Module,
    path: str | os.PathLike[str],
    name: str,
    *,
    drop: Mapping[str, tuple[int, ...]] | None = None,
    state: dict[str, torch.Tensor] | None = None,
    hint: str | None = None,
) -> nn.Module:
    """Load the weight file ``path`` into ``module``, refusing any layout mismatch.

    Args:
        module: the network, whose ``state_dict`` keys are the published ones.
        path: the weight file.
        name: registry key, for messages.
        drop: keys the published file has that ``module`` deliberately does not hold (e.g. a classifier
            head the feature extractor never runs), with their published shapes. They must be present
            with those shapes (so a wrong file is still caught) and are then discarded.
        state: the file's state dict when the caller has read it already (``read_state_dict``).
        hint: what the file probably is instead, added to the error.

    ``*.num_batches_tracked`` entries are optional (files saved before PyTorch 0.4.1 lack them).

    Raises:
        WeightLayoutError: missing / unexpected keys or wrong shapes; lists the first few of each.
    """
    state = dict(read_state_dict(path, name) if state is None else state)
    expected = module.state_dict()
    problems = layout_problems(shapes(state), shapes(expected), drop=drop)
    if problems:
        also = f"; {hint}" if hint else ""
        raise WeightLayoutError(
            f"{path} does not have the published {name} key layout ({'; '.join(problems)}){also}; "
            f"is it the right file? re-download it with `make weights`")
    for k in drop or {}:
        state.pop(k, None)
    for k in expected:
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = expected[k]
    module.load_state_dict(state, strict=True)
    return module
