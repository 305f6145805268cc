"""Small builders shared by tests (tiny networks, fixed episodes)."""
from __future__ import annotations

from functools import partial

import torch
from torch.utils.data import Dataset

from talkinghead.modules.meta_learning import MetaLearningModule
from talkinghead.nets import Embedder, Generator, ProjectionDiscriminator

TINY = dict(emb_dim=32, base_channels=8, max_channels=32, attn_res=16)
TINY_G = dict(emb_dim=32, base_channels=8, max_channels=32, attn_res_down=16, attn_res_up=16)


def tiny_module(num_videos: int, size: int = 32, d_steps: int = 1, lr: float = 1e-3, **weights: float):
    loss_weights = dict(pixel=10.0, adversarial=1.0, feature_matching=10.0, match=10.0)
    loss_weights.update(weights)
    tiny, tiny_g = dict(TINY), dict(TINY_G)
    if size <= 16:  # no 16² map to attend to inside a 16² network
        tiny["attn_res"] = tiny_g["attn_res_down"] = tiny_g["attn_res_up"] = None
    return MetaLearningModule(
        Embedder(size, **tiny),
        Generator(size, num_down=2, num_res=1, **tiny_g),
        ProjectionDiscriminator(num_videos, size, **tiny),
        loss_weights=loss_weights,
        optimizer_g=partial(torch.optim.Adam, lr=lr, betas=(0.5, 0.999)),
        optimizer_d=partial(torch.optim.Adam, lr=lr, betas=(0.5, 0.999)),
        d_steps_per_g=d_steps,
    )


class FixedEpisodes(Dataset):
    """``n`` fixed random episodes (K+1 frames each) repeated ``repeat`` times: a batch to overfit."""

    def __init__(self, n: int = 2, K: int = 2, size: int = 32, repeat: int = 1000, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)

        def smooth(*shape: int) -> torch.Tensor:  # low-frequency random images in [-1, 1]
            low = torch.rand(*shape[:-2], 4, 4, generator=g) * 2 - 1
            return torch.nn.functional.interpolate(low.flatten(0, 1), size=shape[-2:], mode="bilinear",
                                                   align_corners=False).view(*shape)

        self.frames = smooth(n, K + 1, 3, size, size)
        self.lms = smooth(n, K + 1, 3, size, size)
        self.n, self.repeat = n, repeat

    def __len__(self) -> int:
        return self.n * self.repeat

    def __getitem__(self, i: int) -> dict:
        j = i % self.n
        return {"frames": self.frames[j], "landmark_images": self.lms[j], "video_index": torch.tensor(j)}
