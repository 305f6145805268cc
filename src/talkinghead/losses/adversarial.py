"""Hinge adversarial losses (paper eq. 4 and 6; Lim & Ye 2017, Miyato et al. 2018)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hinge_d_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: mean(max(0, 1 - D(x))) + mean(max(0, 1 + D(x_hat))).

    Zero only when every real score is >= 1 and every fake score <= -1.  Computed in fp32.
    """
    return F.relu(1.0 - real_scores.float()).mean() + F.relu(1.0 + fake_scores.float()).mean()


def adversarial_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """Generator's adversarial term L_ADV = -D(x_hat): it falls as the discriminator believes the fakes."""
    return -fake_scores.float().mean()
