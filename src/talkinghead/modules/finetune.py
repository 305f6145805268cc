"""Fine-tuning stage (paper Sec. 3.4): a meta-learned G and D specialised to one new person from T frames.

Given the new person's embedding ê_new (mean of E over the T frames):

* G's person-specific AdaIN parameters become a free vector ψ', initialised to ``P ê_new``, trained together
  with G's person-generic weights (the projection P is no longer used);
* D's projection vector for the new video becomes w', initialised to ``w0 + ê_new`` (the W table and w0 are no
  longer used);
* the objective is the meta-learning one without the embedding match term.

The loss terms and D's hinge update are those of meta-learning, in their shared base
:class:`~talkinghead.modules.adversarial.AdversarialModule` (this class only swaps the parameters they act on).  "FF" (feed-forward, no fine-tuning) is the same module with zero steps: ψ' = P ê_new.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from talkinghead.modules.adversarial import AdversarialModule, OptimizerFactory
from talkinghead.nets import Generator, ProjectionDiscriminator
from talkinghead.nets.spectral import power_iteration


@torch.no_grad()
def initial_psi(generator: Generator, e_new: torch.Tensor) -> torch.Tensor:
    """ψ' = P ê_new, (emb,) -> (num_adain_params,), computed in eval mode (no spectral-norm power step)."""
    was = generator.training
    generator.eval()
    psi = generator.project(e_new.reshape(1, -1))[0].clone()
    generator.train(was)
    return psi


@torch.no_grad()
def initial_w(discriminator: ProjectionDiscriminator, e_new: torch.Tensor) -> torch.Tensor:
    """w' = w0 + ê_new, (emb,)."""
    return (discriminator.w0.detach() + e_new.reshape(-1)).clone()


class FewShotFrames(Dataset):
    """The T frames of the new person; item i is frame ``i % T`` (a sampler picks targets among them).

    ``frames``, ``landmark_images``: (T, 3, S, S) in [-1, 1].
    """

    def __init__(self, frames: torch.Tensor, landmark_images: torch.Tensor) -> None:
        if frames.shape != landmark_images.shape or frames.dim() != 4:
            raise ValueError(
                f"frames and landmark images must be (T, 3, S, S), got {tuple(frames.shape)} and "
                f"{tuple(landmark_images.shape)}"
            )
        self.frames, self.landmark_images = frames, landmark_images

    def __len__(self) -> int:
        return self.frames.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j = int(i) % len(self)
        return {"frames": self.frames[j], "landmark_images": self.landmark_images[j]}


class FineTuningModule(AdversarialModule):
    """Fine-tunes G (shared weights + ψ') and D (+ w') on the T frames of one person.

    Args:
        generator, discriminator: the meta-learned networks (modified in place by training).
        e_new: (emb,) the new person's embedding ê_new.
        loss_weights: as in meta-learning; ``match`` is forced to 0 (no W table, no embedder here).
        optimizer_g / optimizer_d: partial optimisers, from config.
        d_steps_per_g: D updates per G update; g_first: G's update first (FSTH's order), see AdversarialModule.
        content_loss, config, channels_last: as in :class:`AdversarialModule`.
    Batches: ``{"frames": (B, 3, S, S), "landmark_images": (B, 3, S, S)}``, targets drawn among the T frames.
    """

    def __init__(
        self,
        generator: Generator,
        discriminator: ProjectionDiscriminator,
        e_new: torch.Tensor,
        loss_weights: Mapping[str, float],
        optimizer_g: OptimizerFactory,
        optimizer_d: OptimizerFactory,
        d_steps_per_g: int = 1,
        content_loss: nn.Module | None = None,
        config: Mapping[str, Any] | None = None,
        channels_last: bool = False,
        g_first: bool = False,
    ) -> None:
        weights = {k: float(v) for k, v in loss_weights.items()}
        weights["match"] = 0.0  # the paper's fine-tuning objective has no match term
        super().__init__(
            generator,
            discriminator,
            weights,
            optimizer_g,
            optimizer_d,
            d_steps_per_g=d_steps_per_g,
            content_loss=content_loss,
            config=config,
            channels_last=channels_last,
            g_first=g_first,
        )
        if e_new.numel() != discriminator.emb_dim:
            raise ValueError(
                f"e_new has {e_new.numel()} values, the model's embeddings have {discriminator.emb_dim}"
            )
        self.register_buffer("e_new", e_new.detach().reshape(-1).clone())
        self.psi = nn.Parameter(initial_psi(generator, self.e_new))
        self.w_prime = nn.Parameter(initial_w(discriminator, self.e_new))

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        g_params = [p for n, p in self.generator.named_parameters() if not n.startswith("P.")]
        # W and w0 are replaced by w' (b stays: it is the w0_b layer's bias)
        d_params = [p for n, p in self.discriminator.named_parameters() if not n.startswith(("W.", "w0_b.param"))]
        return [
            self.optimizer_g(params=g_params + [self.psi]),
            self.optimizer_d(params=d_params + [self.w_prime]),
        ]

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        x, y = batch["frames"], batch["landmark_images"]
        power_iteration(self.generator)  # once per G update (D's runs in discriminator_step)
        x_hat = self.generator(y, psi=self.psi)
        self.adversarial_update(x, y, x_hat, None, None, None, w=self.w_prime, prefix="finetune")

    @torch.no_grad()
    def render(self, landmark_images: torch.Tensor) -> torch.Tensor:
        """G(y; ψ') for (N, 3, S, S) landmark images, in eval mode."""
        was = self.generator.training
        self.generator.eval()
        out = self.generator(landmark_images.to(self.psi.device), psi=self.psi)
        self.generator.train(was)
        return out

    def reconstruct(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.render(batch["landmark_images"])
