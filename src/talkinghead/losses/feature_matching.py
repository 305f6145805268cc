"""Feature-matching loss L_FM on the discriminator's activations (paper Sec. 3.2, after pix2pixHD)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def feature_matching_loss(fake_feats: Sequence[torch.Tensor], real_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over D's blocks of the mean L1 distance between fake and real activations (real ones detached).

    A mean, as the authors' FSTH (``criterions/featmat.py``: the sum divided by the number of blocks) with its
    weight 10; a sum would make the term as many times stronger as D has blocks (7 in the paper's D).
    """
    if len(fake_feats) != len(real_feats):
        raise ValueError(f"feature lists differ in length: {len(fake_feats)} vs {len(real_feats)}")
    if not fake_feats:
        raise ValueError("feature matching needs at least one block's activations")
    return sum(F.l1_loss(f.float(), r.detach().float()) for f, r in zip(fake_feats, real_feats)) / len(fake_feats)
