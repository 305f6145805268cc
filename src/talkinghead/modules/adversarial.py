"""The adversarial part shared by meta-learning and fine-tuning: G's loss terms against D, D's hinge update and
one G update after ``d_steps_per_g`` D updates (paper Sec. 3.2 and 3.4), with manual optimisation.

:class:`~talkinghead.modules.meta_learning.MetaLearningModule` adds the embedder, the W table's optimiser and the
match term; :class:`~talkinghead.modules.finetune.FineTuningModule` swaps in ψ' and w'.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from talkinghead.losses.adversarial import adversarial_loss, hinge_d_loss
from talkinghead.losses.feature_matching import feature_matching_loss
from talkinghead.losses.match import match_loss
from talkinghead.losses.pixel import pixel_loss
from talkinghead.losses.terms import term_weights
from talkinghead.nets import Generator, ProjectionDiscriminator
from talkinghead.nets.spectral import power_iteration
from talkinghead.visualize import batch_to_float

OptimizerFactory = Callable[..., torch.optim.Optimizer]


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class AdversarialModule(pl.LightningModule):
    """G against a projection D: the loss terms, D's hinge step and the adversarial update of both stages.

    Args:
        generator, discriminator: built networks (``talkinghead.nets``).
        loss_weights: weight per term of ``talkinghead.losses.terms.GENERATOR_TERMS``.
        optimizer_g / optimizer_d: partial optimisers (``params`` still missing), from config.
        d_steps_per_g: discriminator updates per generator update (the paper uses 2).
        g_first: G's update first, against D before this iteration's D updates, which then learn from the same
            fakes (FSTH's order, ``runners/holycow.py`` ``run_epoch``); False: D's updates first, G's against the
            updated D.
        content_loss: ``talkinghead.losses.content.ContentLoss`` built with unit weights, whose ``terms(x_hat, x)``
            gives ``{"content_vgg19": t, "content_vggface": t}``, or None when both content weights are 0.
        config: the resolved experiment config, saved in checkpoints so that later stages rebuild the networks.
        channels_last: lay the batch's images out channels-last on the device (the networks' weights are put in
            that format by ``talkinghead.speed.Speed.prepare``).
    """

    def __init__(
        self,
        generator: Generator,
        discriminator: ProjectionDiscriminator,
        loss_weights: Mapping[str, float],
        optimizer_g: OptimizerFactory,
        optimizer_d: OptimizerFactory,
        d_steps_per_g: int = 1,
        content_loss: nn.Module | None = None,
        config: Mapping[str, Any] | None = None,
        channels_last: bool = False,
        g_first: bool = False,
    ) -> None:
        super().__init__()
        weights = term_weights(loss_weights)
        if d_steps_per_g < 1:
            raise ValueError(f"d_steps_per_g must be >= 1, got {d_steps_per_g}")
        needs_content = any(loss_weights.get(k, 0) for k in ("content_vgg19", "content_vggface"))
        if needs_content and content_loss is None:
            raise ValueError("content loss weights are non-zero but no content_loss module was given")
        self.automatic_optimization = False
        self.generator, self.discriminator = generator, discriminator
        self.content_loss = content_loss
        self.loss_weights = weights
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.w_from_fakes = False
        self.d_steps_per_g = d_steps_per_g
        self.g_first = bool(g_first)
        self.channels_last = channels_last
        self.save_hyperparameters({"config": dict(config or {}), "d_steps_per_g": d_steps_per_g})

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Image batches (B, 3, H, W) go channels-last on the device when the networks are.  Episodes (5-D) are
        laid out once, where they are split (``sources``).  Training loaders send frames and landmark images as
        uint8 (4x less host-to-device traffic); they become [-1, 1] float32 here, on the device."""
        if isinstance(batch, Mapping):
            batch = batch_to_float(dict(batch))
        if self.channels_last and isinstance(batch, Mapping):
            batch = dict(batch)
            for key in ("frames", "landmark_images"):
                if key in batch and batch[key].dim() == 4:
                    batch[key] = batch[key].contiguous(memory_format=torch.channels_last)
        return batch

    def sync_w_grad(self) -> None:
        """Under DDP, W's gradient is the mean over ranks of their sparse row gradients: every rank all-gathers
        the (index, row) pairs of all ranks' batches (world x B rows of emb_dim, not the whole table)."""
        world = _world_size()
        table = self.discriminator.w_table
        if world < 2 or table.grad is None:
            return
        g = table.grad
        idx, val = g._indices()[0], g._values()
        n = torch.tensor([idx.numel()], device=idx.device)
        sizes = [torch.zeros_like(n) for _ in range(world)]
        torch.distributed.all_gather(sizes, n)
        most = int(max(int(s) for s in sizes))
        pad = most - idx.numel()
        idx_p = torch.cat([idx, idx.new_zeros(pad)])
        val_p = torch.cat([val, val.new_zeros(pad, val.shape[1])])
        idx_all = [torch.empty_like(idx_p) for _ in range(world)]
        val_all = [torch.empty_like(val_p) for _ in range(world)]
        torch.distributed.all_gather(idx_all, idx_p)
        torch.distributed.all_gather(val_all, val_p)
        idx_cat = torch.cat([t[: int(k)] for t, k in zip(idx_all, sizes)])
        val_cat = torch.cat([t[: int(k)] for t, k in zip(val_all, sizes)]) / world
        table.grad = torch.sparse_coo_tensor(idx_cat[None], val_cat, table.shape)

    # ------------------------------------------------------------------ optimisation
    def d_optimizers(self) -> tuple[Any, Any, torch.optim.Optimizer | None]:
        """(G's, D's, W's raw torch optimiser or None) of the running Trainer."""
        opts = self.optimizers()
        opts = opts if isinstance(opts, (list, tuple)) else [opts]
        opt_w = opts[2].optimizer if len(opts) > 2 else None
        return opts[0], opts[1], opt_w

    @property
    def iteration(self) -> int:
        """Generator updates done so far (``global_step`` counts every optimiser's steps)."""
        return self.global_step // (1 + self.d_steps_per_g)

    def generator_terms(
        self, x: torch.Tensor, y: torch.Tensor, x_hat: torch.Tensor, e_frames: torch.Tensor | None,
        w_i: torch.Tensor | None, video_index: torch.Tensor | None, w: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Unweighted loss terms of G (and E) for real x, fake x_hat under landmarks y.

        ``e_frames`` (B, K, emb): the per-frame embeddings E(x_k, y_k) that the match term compares with W_i
        (B, emb), which is detached.  Real and fake go through D in one batch (one forward: DDP- and
        spectral-norm-friendly).
        """
        b = x.shape[0]
        if w is None and video_index is not None:  # W is not G's to update: no (sparse) gradient for it here
            w = self.discriminator.w_rows(video_index).detach() + self.discriminator.w0
        if w is not None and w.dim() == 2:
            w = torch.cat([w, w])
        scores, feats = self.discriminator(torch.cat([x, x_hat]), torch.cat([y, y]), None, w)
        terms: dict[str, torch.Tensor] = {}
        wts = self.loss_weights
        if wts["pixel"]:
            terms["pixel"] = pixel_loss(x_hat, x)
        if self.content_loss is not None:
            terms.update(self.content_loss.terms(x_hat, x))
        terms["adversarial"] = adversarial_loss(scores[b:])
        terms["feature_matching"] = feature_matching_loss([f[b:] for f in feats], [f[:b] for f in feats])
        if wts["match"] and e_frames is not None and w_i is not None:
            terms["match"] = match_loss(w_i.detach(), e_frames)
        return terms

    def weighted_total(self, terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.loss_weights[k] * v for k, v in terms.items() if self.loss_weights[k])

    def discriminator_step(
        self, opt_d: Any, x: torch.Tensor, y: torch.Tensor, x_hat: torch.Tensor, video_index: torch.Tensor | None,
        w: torch.Tensor | None = None, opt_w: torch.optim.Optimizer | None = None,
    ) -> dict[str, torch.Tensor]:
        """One hinge update of D (real and fake in one batch).  No match term: the paper updates D's parameters,
        W included, by minimising L_DSC alone (FSTH detaches W in L_MCH; vt zeroes its gradient before D's step).
        W_i enters the fake half detached (FSTH ``discriminators/FSTH.py``) unless ``w_from_fakes``; w0 and b
        learn from both halves.  ``opt_w``: W's sparse optimiser, stepped with ``opt_d``."""
        D = self.discriminator
        power_iteration(D)  # spectral norm: one power iteration per optimiser step
        if w is None:
            if video_index is None:
                raise ValueError("give the video index i (meta-learning) or a projection vector w (fine-tuning)")
            w_i = D.w_rows(video_index)
            w = torch.cat([w_i, w_i if self.w_from_fakes else w_i.detach()]) + D.w0
        elif w.dim() == 2:
            w = torch.cat([w, w])
        scores, _ = D(torch.cat([x, x_hat.detach()]), torch.cat([y, y]), None, w)
        real, fake = scores.chunk(2)
        logs = {"d_hinge": hinge_d_loss(real, fake), "d_real": real.detach().mean(), "d_fake": fake.detach().mean()}
        loss = logs["d_hinge"]
        opt_d.zero_grad(set_to_none=True)
        if opt_w is not None:
            opt_w.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        opt_d.step()
        if opt_w is not None and D.w_table.grad is not None:
            self.sync_w_grad()
            opt_w.step()
        return logs

    def adversarial_update(
        self, x: torch.Tensor, y: torch.Tensor, x_hat: torch.Tensor, e_frames: torch.Tensor | None,
        w_i: torch.Tensor | None, video_index: torch.Tensor | None, w: torch.Tensor | None = None,
        prefix: str = "train",
    ) -> dict[str, torch.Tensor]:
        """``d_steps_per_g`` updates of D and one of G (and E, when x_hat depends on it), G's first when
        ``g_first`` (FSTH's order: G against D before D's updates, which then take the same fakes x_hat), else
        last; logs every term as ``<prefix>/...``.  Fine-tuning calls it with an explicit projection vector ``w``
        and no embeddings."""
        opt_g, opt_d, opt_w = self.d_optimizers()
        for _ in range(0 if self.g_first else self.d_steps_per_g):
            d_logs = self.discriminator_step(opt_d, x, y, x_hat, video_index, w=w, opt_w=opt_w)
        terms = self.generator_terms(x, y, x_hat, e_frames, w_i, video_index, w=w)
        g_total = self.weighted_total(terms)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(g_total)
        opt_g.step()
        for _ in range(self.d_steps_per_g if self.g_first else 0):  # D's grads from G's backward are zeroed first
            d_logs = self.discriminator_step(opt_d, x, y, x_hat, video_index, w=w, opt_w=opt_w)

        logs = {f"{prefix}/g_{k}": v.detach() for k, v in terms.items()}
        logs.update({f"{prefix}/{k}": v for k, v in d_logs.items()})
        logs[f"{prefix}/g_total"] = g_total.detach()
        logs[f"{prefix}/l1"] = (x_hat.detach() - x).abs().mean()
        self.log_dict(logs, on_step=True, on_epoch=False, batch_size=x.shape[0])
        return logs

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The frozen perceptual backbones come from their own weight files: keep them out of checkpoints.
        sd = checkpoint["state_dict"]
        for key in [k for k in sd if k.startswith("content_loss.")]:
            del sd[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.content_loss is not None:
            for k, v in self.content_loss.state_dict().items():
                checkpoint["state_dict"].setdefault(f"content_loss.{k}", v)
