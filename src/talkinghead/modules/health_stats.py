"""Cheap statistics of G's output that the health monitor (``talkinghead.callbacks.health``) watches.

Device tensors only (no host-device synchronisation): the LightningModule logs them with its loss terms.
"""
from __future__ import annotations

import torch


@torch.no_grad()
def output_statistics(x_hat: torch.Tensor, x: torch.Tensor, prefix: str = "train") -> dict[str, torch.Tensor]:
    """Spread across the batch and colour of G's output ``x_hat`` and of the real frames ``x``, (B, 3, S, S) each.

    ``<prefix>/g_spread`` / ``<prefix>/x_spread``: per-pixel standard deviation across the batch, averaged over
    pixels and channels (0 when every sample of the batch is the same image); only for B >= 2.
    ``<prefix>/g_colour_gap``: the largest per-channel difference of the batch's mean colour, |mean_c x_hat -
    mean_c x| (images in [-1, 1]; the "all red" runs).
    """
    xh, xr = x_hat.detach().float(), x.detach().float()
    out = {f"{prefix}/g_colour_gap": (xh.mean(dim=(0, 2, 3)) - xr.mean(dim=(0, 2, 3))).abs().max()}
    if xh.shape[0] >= 2:
        out[f"{prefix}/g_spread"] = xh.std(dim=0, correction=0).mean()
        out[f"{prefix}/x_spread"] = xr.std(dim=0, correction=0).mean()
    return out
