"""A running (exponential) average of some of a module's networks, kept beside the trained weights.

The authors' FSTH code keeps one of the embedder and the generator (decay 0.999 in meta-learning, 0.972 in
fine-tuning, updated after every iteration, buffers copied: ``runners/holycow.py`` ``update_running_average``) and
renders from it (``drive.py``).  Here that is ``torch.optim.swa_utils.AveragedModel`` with
``get_ema_multi_avg_fn`` over the named attributes only (E and G: the discriminator and its W table are not
averaged, as in FSTH), updated once per generator update; spectral norm's (u, v) buffers are copied from the
trained networks, as FSTH does, because ``use_buffers=False``.

Checkpoints keep the trained weights in ``state_dict`` (resuming trains them) and the average under
``checkpoint["weight_average"]``: ``{"decay", "n_averaged", "state_dict"}`` whose keys are the module's own
(``embedder.…``, ``generator.…``), so :func:`averaged_state` can lay it over a checkpoint's state dict.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

CHECKPOINT_KEY = "weight_average"


class _Holder(nn.Module):
    """The averaged attributes of a module under their own names (modules or single parameters)."""

    def __init__(self, parts: Mapping[str, nn.Module | nn.Parameter]) -> None:
        super().__init__()
        for name, part in parts.items():
            setattr(self, name, part)


def _parts(pl_module: nn.Module, names: Sequence[str]) -> _Holder:
    missing = [n for n in names if getattr(pl_module, n, None) is None]
    if missing:
        raise ValueError(f"weight averaging: the module has no {', '.join(missing)} to average")
    return _Holder({n: getattr(pl_module, n) for n in names})


def from_config(settings: Mapping[str, Any] | None) -> WeightAverage | None:
    """The callback of a ``callbacks.weight_average`` block (``enabled``, ``decay``), or None when it is off."""
    if settings is None or not settings.get("enabled", True):
        return None
    return WeightAverage(float(settings["decay"]))


class WeightAverage(pl.Callback):
    """EMA of ``pl_module.<name>`` for ``names`` (decay ``decay``), updated after every generator update.

    ``average`` (an ``AveragedModel``) exists once training starts; ``average_state()`` gives the averaged tensors
    under the module's keys.  A module with an ``iteration`` property (manual optimisation: one batch = one G
    update and ``d_steps_per_g`` D updates) is averaged once per batch.
    """

    def __init__(self, decay: float = 0.999, names: Sequence[str] = ("embedder", "generator")) -> None:
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"weight_average.decay must be in [0, 1), got {decay}")
        self.decay, self.names = float(decay), tuple(names)
        self.average: AveragedModel | None = None
        self._pending: Mapping[str, Any] | None = None

    # ------------------------------------------------------------------ training
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # built here, not in setup(): the networks are on their device now, so the average lives there too
        self.average = AveragedModel(_parts(pl_module, self.names), multi_avg_fn=get_ema_multi_avg_fn(self.decay),
                                     use_buffers=False)
        if self._pending is not None:
            self.load_average(self._pending)
            self._pending = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any, **kw: Any) -> None:
        assert self.average is not None
        self.average.update_parameters(_parts(pl_module, self.names))

    @contextlib.contextmanager
    def swapped_in(self, pl_module: nn.Module) -> Iterator[bool]:
        """Within the block ``pl_module``'s averaged networks hold the average's weights (the trained ones are
        put back after it, also on an exception); yields False, changing nothing, before the average exists.
        What the sample grids and the metrics render during training: the weights FSTH renders from."""
        if self.average is None:
            yield False
            return
        live = dict(_parts(pl_module, self.names).named_parameters())
        avg = dict(self.average.module.named_parameters())
        assert live.keys() == avg.keys(), "the averaged networks' parameters changed"
        kept = {k: p.detach().clone() for k, p in live.items()}
        try:
            with torch.no_grad():
                for k, p in live.items():
                    p.copy_(avg[k])
            yield True
        finally:
            with torch.no_grad():
                for k, p in live.items():
                    p.copy_(kept[k])

    # ------------------------------------------------------------------ state
    def average_state(self) -> dict[str, Any]:
        """The averaged tensors under the module's keys (``embedder.…``), plus ``decay`` and ``n_averaged``.

        (Not ``Callback.state_dict``: Lightning would store the tensors a second time, under ``callbacks``.)"""
        assert self.average is not None, "no average before training starts"
        sd = {k[len("module."):]: v.detach().clone() for k, v in self.average.state_dict().items()
              if k.startswith("module.")}
        return {"decay": self.decay, "n_averaged": int(self.average.n_averaged), "state_dict": sd}

    def load_average(self, saved: Mapping[str, Any]) -> None:
        assert self.average is not None
        sd = {f"module.{k}": v for k, v in saved["state_dict"].items()}
        sd["n_averaged"] = torch.tensor(int(saved["n_averaged"]), dtype=torch.long)
        self.average.load_state_dict(sd)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if self.average is not None:
            checkpoint[CHECKPOINT_KEY] = self.average_state()

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # resuming: the trained weights come from state_dict (Lightning), the average from here; a checkpoint
        # without one starts the average afresh from the resumed weights
        self._pending = checkpoint.get(CHECKPOINT_KEY)


@contextlib.contextmanager
def averaged_weights(trainer: pl.Trainer, pl_module: nn.Module) -> Iterator[bool]:
    """``WeightAverage.swapped_in`` of the trainer's weight-average callback; yields False (nothing swapped) when
    the run keeps no average (``callbacks.weight_average=null``) or it is not built yet."""
    cb = next((c for c in trainer.callbacks if isinstance(c, WeightAverage)), None)
    if cb is None:
        yield False
        return
    with cb.swapped_in(pl_module) as swapped:
        yield swapped


def averaged_state(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor] | None:
    """A checkpoint's ``state_dict`` with the weight average laid over it, or None when it holds no average."""
    saved = checkpoint.get(CHECKPOINT_KEY)
    if not saved:
        return None
    state = dict(checkpoint["state_dict"])
    state.update(saved["state_dict"])
    return state
