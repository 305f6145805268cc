"""What every pretrained backbone shares: freezing, staying in eval mode, and image value ranges."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TypeVar

from torch import Tensor, nn

_B = TypeVar("_B", bound="FrozenBackbone")

#: How a VGG's 2x2 stride-2 pooling layers pool: ``"max"`` as the nets were trained, ``"avg"`` as FSTH's
#: perceptual loss runs them (``criterions/common/perceptual_loss.py`` swaps every MaxPool2d for AvgPool2d).
Pool = Literal["max", "avg"]


def make_pool(pool: Pool) -> nn.Module:
    """A 2x2 stride-2 pooling layer of kind ``pool`` (no weights: the key layout is the same for both)."""
    if pool == "max":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    if pool == "avg":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")


def to_unit_range(images: Tensor, value_range: tuple[float, float]) -> Tensor:
    """Map float images from ``value_range`` (e.g. ``(-1, 1)``) to [0, 1]; shape kept ``(B, 3, H, W)``."""
    lo, hi = float(value_range[0]), float(value_range[1])
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    if not images.is_floating_point():
        raise TypeError(f"expected float images in {value_range}, got dtype {images.dtype}")
    return (images - lo) / (hi - lo)


def check_images(images: Tensor, what: str, min_size: int = 1) -> None:
    """Raise ``ValueError`` unless ``images`` is ``(B, 3, H, W)`` with ``H, W >= min_size``."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{what} expects RGB images of shape (B, 3, H, W), got {tuple(images.shape)}")
    if min(images.shape[-2:]) < min_size:
        raise ValueError(f"{what} needs images of at least {min_size}x{min_size} pixels, "
                         f"got {tuple(images.shape[-2:])}")


class FrozenBackbone(nn.Module):
    """A pretrained network used as a fixed feature extractor.

    After ``freeze()`` it never leaves eval mode (``train(True)`` is ignored, so Lightning's ``.train()``
    on the parent cannot switch batch-norm statistics on), and its parameters need no gradient. Gradients
    still flow through it to its INPUT, which is what perceptual losses need.
    """

    _frozen: bool = False

    def freeze(self: _B, *, in_state_dict: bool = True) -> _B:
        """Freeze in place and return ``self``.

        Args:
            in_state_dict: if False, the weights are left out of ``state_dict()`` (and filled back in from the
                module itself when a state dict without them is loaded, so strict loading still works): a
                training checkpoint then does not carry 100+ MB of public weights that are reloaded from
                ``weights/`` anyway. They stay parameters (``requires_grad=False``), so DDP does not
                re-broadcast them every step as it would buffers.
        """
        self._frozen = True
        for p in self.parameters():
            p.requires_grad_(False)
        if not in_state_dict and not getattr(self, "_omitting", False):
            self._omitting = True
            names = list(nn.Module.state_dict(self).keys())
            self._omitted_names = names

            def drop(module: nn.Module, state: dict, prefix: str, local_metadata: object) -> None:
                for name in names:
                    state.pop(prefix + name, None)

            def refill(state: dict, prefix: str, *args: object) -> None:
                own = dict(self.named_parameters())
                own.update(self.named_buffers())
                for name in names:
                    state.setdefault(prefix + name, own[name])

            post_hook = getattr(self, "register_state_dict_post_hook", None) or self._register_state_dict_hook
            post_hook(drop)
            self._register_load_state_dict_pre_hook(refill)
        return super().train(False)

    def train(self: _B, mode: bool = True) -> _B:
        """Switch mode, except that a frozen backbone always stays in eval mode."""
        return super().train(False if self._frozen else mode)



def run_layers(
    sequence: Sequence[nn.Module],
    images: Tensor,
    layers: Sequence[int],
    preprocess: Callable[[Tensor], Tensor] | None,
    what: str,
) -> list[Tensor]:
    """Run ``sequence`` on ``preprocess(images)`` up to ``max(layers)``; return the outputs at ``layers``.

    Checks the image shape first: each 2x2 max-pool before the deepest requested layer halves the size,
    so ``H, W`` must be at least ``2 ** pools``.
    """
    n = len(sequence)
    wanted = sorted({int(i) for i in layers})
    if not wanted or wanted[0] < 0 or wanted[-1] >= n:
        raise ValueError(f"{what} layer indices must lie in 0..{n - 1}, got {list(layers)}")
    pools = sum(isinstance(sequence[i], (nn.MaxPool2d, nn.AvgPool2d)) for i in range(wanted[-1]))
    check_images(images, what, min_size=2 ** pools)
    x = images if preprocess is None else preprocess(images)
    out: list[Tensor] = []
    for i in range(wanted[-1] + 1):
        x = sequence[i](x)
        if i in wanted:
            out.append(x)
    return out
