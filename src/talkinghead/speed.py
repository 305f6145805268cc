"""The fast path and the plain path of every stage that runs the networks (``speed=fast|plain``).

The plain path is fp32, eager, contiguous (NCHW) memory and for-loop Adam: the reference the fast path is
measured and tested against (``make bench``, ``tests/test_speed.py``).  The fast path:

* **precision** ``auto``: bf16 autocast where the device computes bf16 natively (CUDA with bf16 support; x86
  CPUs with AVX512-BF16 or AMX), else fp32.  The losses, the hinge and spectral norm's sigma stay in fp32.
* **channels_last**: NHWC weights and activations (tensor cores on CUDA, oneDNN's blocked kernels on CPU).
* **compile** ``auto``: ``torch.compile`` of E, G and D for single-process meta-learning on CUDA; off on CPU, where
  the compile time is more than the embedded run saves, under DDP (not verified there), and for the short stages
  (fine-tuning, rendering), unless ``compile: true`` (``make bench`` prints step times and compile times).
* **optimizer** ``fused``: Adam's fused kernel (``foreach`` and ``for-loop`` are the alternatives).
* **cudnn_benchmark**, **matmul_precision** ``high`` (TF32 for what stays fp32 on CUDA), **num_threads**.

Spectral norm's power iteration runs once per optimiser step on both paths (``talkinghead.nets.spectral``).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from talkinghead.errors import ConfigError

PRECISIONS = ("auto", "32-true", "bf16-mixed", "16-mixed")
OPTIMIZERS = ("fused", "foreach", "for-loop")
AUTO_BOOL = (True, False, "auto")


#: Environment override of the native-bf16 probe ("1" or "0"): ``precision: auto`` then answers as on a CPU with
#: (or without) AVX512-BF16, so a machine can rehearse the other kind's defaults (the test suite runs both ways).
NATIVE_BF16_ENV = "TALKINGHEAD_NATIVE_BF16"


def native_bf16(device_type: str) -> bool:
    """True where bf16 matrix maths runs natively: CUDA with bf16 support, x86 CPUs with AVX512-BF16 or AMX.

    (oneDNN also *emulates* bf16 on plain AVX512 CPUs, where it is slower than fp32: those get fp32.)
    ``$TALKINGHEAD_NATIVE_BF16`` = 1 / 0 overrides the probe.
    """
    forced = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ConfigError(f"${NATIVE_BF16_ENV} must be 1 or 0, got {forced!r}")
    return _probe_native_bf16(device_type)


@functools.lru_cache(maxsize=None)
def _probe_native_bf16(device_type: str) -> bool:
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:  # pre-Ampere GPUs only emulate bf16 (slowly)
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch before 2.3
            return torch.cuda.get_device_capability()[0] >= 8
    if device_type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f" {flag}" in flags for flag in ("avx512_bf16", "amx_bf16"))


@dataclass(frozen=True)
class Speed:
    """How a stage runs its networks (``experiments/speed/*.yaml``); ``resolve(device)`` settles the autos."""

    precision: str = "auto"
    channels_last: bool = True
    compile: bool | str = "auto"
    compile_mode: str | None = None
    optimizer: str = "fused"
    cudnn_benchmark: bool = True
    matmul_precision: str = "high"
    num_threads: int | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def plain(cls) -> Speed:
        """fp32, eager, contiguous memory, for-loop Adam."""
        return cls("32-true", False, False, None, "for-loop", False, "highest", None)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Speed:
        """From the ``speed`` config (a mapping); unknown keys and bad values are one-line ConfigErrors."""
        if cfg is None:
            return cls()
        cfg = dict(cfg)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ConfigError(f"unknown speed setting(s) {unknown}; known: {sorted(names)}")
        speed = cls(**cfg)
        speed.check()
        return speed

    def check(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"speed.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"speed.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.compile not in AUTO_BOOL:
            raise ConfigError(f"speed.compile must be true, false or auto, got {self.compile!r}")
        if not isinstance(self.channels_last, bool) or not isinstance(self.cudnn_benchmark, bool):
            raise ConfigError("speed.channels_last and speed.cudnn_benchmark must be true or false")
        if self.matmul_precision not in ("highest", "high", "medium"):
            raise ConfigError(f"speed.matmul_precision must be highest, high or medium, got {self.matmul_precision!r}")
        if self.num_threads is not None and int(self.num_threads) < 1:
            raise ConfigError(f"speed.num_threads must be >= 1 or null, got {self.num_threads}")

    def resolve(self, device: torch.device | str, long_run: bool = True) -> Speed:
        """The settings for ``device`` with every ``auto`` replaced by what pays there.

        ``long_run``: False for stages of seconds to minutes (fine-tuning, rendering), where ``compile: auto``
        means off (its compile time would not be earned back); an explicit ``compile: true`` still compiles.
        """
        kind = torch.device(device).type
        precision = self.precision
        if precision == "auto":
            precision = "bf16-mixed" if native_bf16(kind) else "32-true"
        compile_ = self.compile if self.compile != "auto" else (kind == "cuda" and long_run)
        return replace(self, precision=precision, compile=bool(compile_))

    def describe(self, inference: bool = False) -> str:
        text = (f"{self.precision}, {'channels_last' if self.channels_last else 'contiguous'}, "
                f"{'compiled' if self.compile is True else 'eager'}")
        return text if inference else f"{text}, {self.optimizer} Adam"

    # ------------------------------------------------------------------ applying it
    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(self.precision)

    def apply_process(self) -> None:
        """Process-wide switches: CPU threads, cuDNN autotuning, TF32 for fp32 matmuls and convolutions."""
        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.set_float32_matmul_precision(self.matmul_precision)
        torch.backends.cudnn.allow_tf32 = self.matmul_precision != "highest"  # fp32 convolutions likewise

    def optimizer_kwargs(self) -> dict[str, bool]:
        """Keyword arguments that pick Adam's implementation."""
        return {"fused": {"fused": True}, "foreach": {"foreach": True},
                "for-loop": {"foreach": False, "fused": False}}[self.optimizer]

    def prepare(self, *networks: nn.Module | None) -> None:
        """In place: memory format of every weight, and ``torch.compile`` of each network when on.

        ``nn.Module.compile`` keeps the state-dict keys, so checkpoints are the same with and without it.
        """
        for net in networks:
            if net is None:
                continue
            net.to(memory_format=self.memory_format)
            if self.compile is True:
                net.compile(**({"mode": self.compile_mode} if self.compile_mode else {}))


def to_memory_format(t: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """Images (..., C, H, W) laid out channels-last (or contiguous); 5-D episodes (B, K+1, C, H, W) get a
    layout whose (B*(K+1), C, H, W) view is a channels-last 4-D tensor (and each image of a [:, k] slice HWC)."""
    if memory_format == torch.contiguous_format or t.dim() < 4:
        return t.contiguous()
    if t.dim() == 4:
        return t.contiguous(memory_format=memory_format)
    lead = list(range(t.dim() - 3))
    c, h, w = (t.dim() - 3, t.dim() - 2, t.dim() - 1)
    nhwc = t.permute(*lead, h, w, c).contiguous()
    return nhwc.permute(*lead, t.dim() - 1, t.dim() - 3, t.dim() - 2)


def match_state_layout(optimizer: torch.optim.Optimizer) -> int:
    """Make a restored optimiser run as it was built (in place); returns how many state tensors were changed.

    ``Optimizer.load_state_dict`` brings back the saved param groups, implementation flags included: a plain-path
    checkpoint resumed on the fast path would keep for-loop Adam.  The flags are set back to the ones this optimiser
    was built with (``optimizer.defaults``), Adam's step counters moved where that implementation wants them (the
    parameter's device for fused/capturable, else the CPU), and every per-parameter state tensor given its
    parameter's memory layout: the fused kernel walks a weight and its moments as flat memory, so contiguous moments
    of channels-last weights would pair the wrong elements, silently.
    """
    changed = 0
    for group in optimizer.param_groups:
        for key in ("fused", "foreach", "capturable"):
            if key in optimizer.defaults:
                group[key] = optimizer.defaults[key]
        on_device = bool(group.get("fused")) or bool(group.get("capturable"))
        for param in group["params"]:
            state = optimizer.state.get(param)
            if not state:
                continue
            for key, value in list(state.items()):
                if not torch.is_tensor(value):
                    continue
                if key == "step":
                    where = param.device if on_device else torch.device("cpu")
                    if value.device != where:
                        state[key] = value.to(where, torch.float32)
                        changed += 1
                elif value.shape == param.shape and value.stride() != param.stride():
                    state[key] = torch.empty_like(param, dtype=value.dtype).copy_(value)
                    changed += 1
    return changed
