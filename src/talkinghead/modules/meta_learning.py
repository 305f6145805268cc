"""Meta-learning stage (paper Sec. 3.2): E, G and D trained together on K-shot episodes.

One episode per sample: K frames of video i give e_hat_i = mean_k E(x_k, y_k); G renders the (K+1)-th frame
from its landmarks; D judges it against the real frame.  Manual optimisation: ``d_steps_per_g`` hinge updates of
D (hinge only: W moves with D's hinge, never with the match term, as in the paper, FSTH and vt; and, as in FSTH,
only with the hinge's real half: W_i is detached in the fake half), then one update of G and E on the weighted sum
of the named loss terms, the match term pulling each E(x_k, y_k) towards W_i.  The adversarial part (D's step, G's
terms, the update) is :class:`~talkinghead.modules.adversarial.AdversarialModule`, shared with fine-tuning.

W's rows: with a plain W table (``w_norm="none"``) W has sparse gradients and its own lazy optimiser
(``torch.optim.SparseAdam``, stepped with D's): a step reads and writes only the batch's rows of W and of its two
moments (docs/paper.md, "W costs what the batch touches").
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics.image import StructuralSimilarityIndexMeasure

from talkinghead.losses.terms import GENERATOR_TERMS
from talkinghead.modules.adversarial import AdversarialModule, OptimizerFactory, _world_size
from talkinghead.modules.health_stats import output_statistics
from talkinghead.nets import Embedder, Generator, ProjectionDiscriminator
from talkinghead.nets.spectral import power_iteration
from talkinghead.speed import match_state_layout, to_memory_format

__all__ = ["GENERATOR_TERMS", "MetaLearningModule", "OptimizerFactory", "sparse_adam_like", "split_episode"]


def sparse_adam_like(optimizer_d: OptimizerFactory) -> OptimizerFactory:
    """``torch.optim.SparseAdam`` with the lr, betas and eps of D's partial optimiser (for W's sparse rows)."""
    kw = getattr(optimizer_d, "keywords", {}) or {}
    picked = {k: (tuple(v) if k == "betas" else v) for k, v in kw.items() if k in ("lr", "betas", "eps")}
    return functools.partial(torch.optim.SparseAdam, **picked)


def split_episode(batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """(frames, landmark images) (B, K+1, 3, S, S) -> sources x (B,K,..), y (B,K,..), target x, target y."""
    frames, lms = batch["frames"], batch["landmark_images"]
    if frames.dim() != 5 or frames.shape[1] < 2:
        raise ValueError(f"a batch needs frames of shape (B, K+1, 3, H, W) with K >= 1, got {tuple(frames.shape)}")
    k = frames.shape[1] - 1
    return frames[:, :k], lms[:, :k], frames[:, k], lms[:, k]


class MetaLearningModule(AdversarialModule):
    """Trains the embedder, generator and projection discriminator of the paper.

    Args:
        embedder, generator, discriminator: built networks (``talkinghead.nets``).
        loss_weights: weight per term of ``GENERATOR_TERMS`` (``match``: E's side only; W is detached).
        optimizer_g / optimizer_d, d_steps_per_g, content_loss, config, channels_last: as in
            :class:`~talkinghead.modules.adversarial.AdversarialModule` (G's optimiser also takes E's weights).
        optimizer_w: partial optimiser of W's sparse rows (``w_norm="none"``; default: SparseAdam with D's lr,
            betas and eps); W under spectral norm is dense and stays in ``optimizer_d``.
        w_from_fakes: let W_i learn from the hinge's fake half too (default False: detached there, as in FSTH).
        g_first: G's update before D's (FSTH's order), see ``AdversarialModule``.
    """

    def __init__(
        self,
        embedder: Embedder,
        generator: Generator,
        discriminator: ProjectionDiscriminator,
        loss_weights: Mapping[str, float],
        optimizer_g: OptimizerFactory,
        optimizer_d: OptimizerFactory,
        d_steps_per_g: int = 1,
        content_loss: nn.Module | None = None,
        config: Mapping[str, Any] | None = None,
        channels_last: bool = False,
        optimizer_w: OptimizerFactory | None = None,
        w_from_fakes: bool = False,
        g_first: bool = False,
    ) -> None:
        super().__init__(generator, discriminator, loss_weights, optimizer_g, optimizer_d, d_steps_per_g=d_steps_per_g,
                         content_loss=content_loss, config=config, channels_last=channels_last, g_first=g_first)
        self.embedder = embedder
        self.optimizer_w = optimizer_w or sparse_adam_like(optimizer_d)
        self.w_from_fakes = w_from_fakes
        if discriminator.sparse_w:
            # DDP's reducer cannot take W's sparse gradient (NCCL has no sparse all-reduce, and an unused sparse
            # parameter fails with find_unused_parameters): W stays out of it and ``sync_w_grad`` all-gathers the
            # batch's rows instead.  (Names are relative to the module DDP wraps: this LightningModule.)
            self._ddp_params_and_buffers_to_ignore = ["discriminator.W.weight"]
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)

    def on_train_start(self) -> None:
        # after Lightning restored a checkpoint's optimiser states, which may come from the other memory layout
        for optimizer in self.trainer.optimizers:
            match_state_layout(optimizer)
        if self.discriminator.sparse_w and _world_size() > 1:  # DDP broadcasts only the parameters it holds
            torch.distributed.broadcast(self.discriminator.w_table.data, src=0)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """[G and E's, D's] and, for a sparse W, [..., W's SparseAdam] (stepped with D's, outside Lightning's step
        count: ``global_step`` stays 1 + d_steps_per_g per iteration)."""
        opt_g = self.optimizer_g(params=list(self.embedder.parameters()) + list(self.generator.parameters()))
        D = self.discriminator
        if not D.sparse_w:
            return [opt_g, self.optimizer_d(params=list(D.parameters()))]
        table = D.w_table
        opt_d = self.optimizer_d(params=[p for p in D.parameters() if p is not table])
        return [opt_g, opt_d, self.optimizer_w(params=[table])]

    def sources(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """``split_episode``, laid out channels-last when the networks are: one copy of the K sources into a dense
        (B, K) layout whose (B*K, ...) view is channels-last (a reshape would copy them to NCHW), one of the target."""
        x_src, y_src, x, y = split_episode(batch)
        if self.channels_last:
            x_src, y_src = (to_memory_format(t, torch.channels_last) for t in (x_src, y_src))
            x, y = (t.contiguous(memory_format=torch.channels_last) for t in (x, y))
        return x_src, y_src, x, y

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        x_src, y_src, x, y = self.sources(batch)
        idx = batch["video_index"]
        power_iteration(self.embedder, self.generator)  # once per G/E update (D's runs in discriminator_step)
        e_frames = self.embedder.embed_frames(x_src, y_src)  # (B, K, emb): E(x_k, y_k)
        e_hat = e_frames.mean(dim=1)
        x_hat = self.generator(y, e_hat)
        self.adversarial_update(x, y, x_hat, e_frames, self.discriminator.w_rows(idx), idx)
        with torch.no_grad():  # W_i read after D's steps: how far the two kinds of video embeddings are apart
            w_i = self.discriminator.w_rows(idx).float()
            e_d = e_hat.detach().float()
            self.log_dict({"train/w_e_dist": (w_i - e_d).abs().mean(), "train/w_norm": w_i.norm(dim=1).mean(),
                           "train/e_norm": e_d.norm(dim=1).mean()}, on_step=True, batch_size=x.shape[0])
            self.log_dict(output_statistics(x_hat, x), on_step=True, batch_size=x.shape[0])  # for the health monitor
        opt_g, opt_d, _ = self.d_optimizers()
        # Host numbers are logged as CPU tensors: Lightning turns a Python float into a tensor on the module's
        # device, and on CUDA that copy waits for the GPU (a host-device synchronisation in every step).
        host = {"train/iteration": self.iteration, "lr/g": opt_g.param_groups[0]["lr"],
                "lr/d": opt_d.param_groups[0]["lr"]}
        self.log_dict({k: torch.tensor(float(v)) for k, v in host.items()}, on_step=True, batch_size=x.shape[0])

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def reconstruct(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """G's rendering of each episode's target frame from its K sources, (B, 3, S, S)."""
        x_src, y_src, _, y = self.sources(batch)
        return self.generator(y, self.embedder.embed(x_src, y_src))

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        x_hat = self.reconstruct(batch)
        x = split_episode(batch)[2]
        self.val_ssim.update((x_hat + 1) / 2, (x + 1) / 2)
        self.log("val/l1", (x_hat - x).abs().mean(), on_epoch=True, prog_bar=True, batch_size=x.shape[0], sync_dist=True)
        self.log("val/ssim", self.val_ssim, on_epoch=True, prog_bar=True, batch_size=x.shape[0])
