"""``make sanity``: overfit one video in a few minutes on the CPU and check that G's reconstruction gets there.

The first thing to run on a new machine, a new dataset or a changed model.  It meta-learns the real modules (the
composed ``meta_learn`` config with the overrides below, then the user's) on ONE video of the embedded synthetic
heads, then renders that video's frames from their landmarks and K of its frames, and checks the mean L1 error
(images in [-1, 1]) on the pixels that move against a stated bound: ``MAX_L1`` times that of the video's median
frame (the best a G blind to its landmarks can draw).  Exit status 0: PASS; 1: FAIL (the message says what was reached).

A G that cannot see its landmark input can at best draw the video's average frame; ``--blind-landmarks`` zeroes
the landmark images (in training and in the check) to show that the bound tells the two apart.

    python -m talkinghead.tools.sanity                      # PASS/FAIL line, exit status
    python -m talkinghead.tools.sanity --blind-landmarks    # must FAIL
    python -m talkinghead.tools.sanity iterations=500 model.image_size=64   # any meta_learn override
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch

#: one video, a narrow 32² model, a fast learning rate; no validation, samples or metrics
OVERRIDES = (
    "data=synthetic", "data.num_identities=2", "data.test_identities=1", "data.videos_per_identity=1",
    "data.frames_per_video=16", "data.batch_size=4", "data.samples_per_epoch=32", "K=2", "iterations=300",
    "model.image_size=32", "model.emb_dim=64",
    "model.embedder.base_channels=16", "model.embedder.max_channels=64", "model.embedder.attn_res=null",
    "model.generator.base_channels=16", "model.generator.max_channels=64", "model.generator.num_down=2",
    "model.generator.num_res=1", "model.generator.attn_res_down=null", "model.generator.attn_res_up=null",
    "model.discriminator.base_channels=16", "model.discriminator.max_channels=64",
    "model.discriminator.attn_res=null", "optim.g.lr=1e-3", "optim.d.lr=1e-3",
    "logger=csv", "trainer=cpu", "trainer.enable_progress_bar=false",
    "callbacks.val_every_n_iterations=100000", "callbacks.sample_every_n_iterations=100000",
    "callbacks.metrics_every_n_iterations=0", "callbacks.ckpt_every_n_iterations=100000", "resume=false",
)
#: the stated bound: G's L1 on the moving pixels of the training video as a fraction of the median frame's there
MAX_L1 = 0.7
#: a pixel moves when it differs from the video's median frame by more than this (images in [-1, 1])
MOVING = 0.1


@dataclass
class SanityResult:
    l1: float               # G's L1 on the moving pixels of the training video's frames
    mean_frame_l1: float    # the video's median frame's L1 there: what a G blind to its landmarks can reach
    max_l1: float           # the bound, a fraction of mean_frame_l1
    iterations: int
    seconds: float
    blind: bool

    @property
    def passed(self) -> bool:
        return self.l1 <= self.max_l1 * self.mean_frame_l1

    def line(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        what = "with the landmark images zeroed, " if self.blind else ""
        return (f"sanity: {verdict}: {what}reconstruction L1 {self.l1:.4f} on the moving pixels of the one training "
                f"video after {self.iterations} iterations (needs <= {self.max_l1:g} x {self.mean_frame_l1:.4f}, the "
                f"L1 of its median frame, which a G blind to its landmarks can at best draw) in {self.seconds:.0f} s")


class BlindLandmarks(pl.Callback):
    """Zero the landmark images of every training batch (on the device, before the step): G cannot see its input."""

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        batch["landmark_images"].zero_()


def episodes(datamodule: Any, n: int) -> dict[str, torch.Tensor]:
    """``n`` episodes of the training video, as float [-1, 1] tensors (B, K+1, 3, S, S)."""
    from talkinghead.visualize import batch_to_float

    ds = datamodule.train_dataloader().dataset
    return batch_to_float(torch.utils.data.default_collate([ds[i] for i in range(n)]))


@torch.no_grad()
def reconstruction_l1(module: Any, batch: dict[str, torch.Tensor], blind: bool) -> tuple[float, float]:
    """(G's L1 on the pixels that move, the L1 there of the video's per-pixel median frame).

    The median frame is the best constant image under L1: what a G blind to its landmark input can at best draw.
    A synthetic video is mostly still background, so the whole-frame L1 of that median is already low (0.022 on
    the default video); the pixels that move (|frame - median| > ``MOVING`` in any channel) tell the two apart."""
    from talkinghead.modules.meta_learning import split_episode

    batch = {k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()}
    if blind:
        batch["landmark_images"].zero_()
    module.eval()
    x = split_episode(batch)[2]
    x_hat = module.reconstruct({k: v.to(module.device) if torch.is_tensor(v) else v for k, v in batch.items()})
    median = batch["frames"].flatten(0, 1).median(dim=0).values
    moving = ((x - median).abs().amax(dim=1, keepdim=True) > MOVING).expand_as(x)
    return (x_hat.float().cpu() - x).abs()[moving].mean().item(), (median - x).abs()[moving].mean().item()


def sanity(overrides: Sequence[str] = (), blind: bool = False, max_l1: float = MAX_L1,
           run_dir: str | None = None) -> SanityResult:
    """Overfit one video; returns the reached L1 (see the module docstring)."""
    from talkinghead.callbacks.metrics import MetricsCallback
    from talkinghead.callbacks.samples import SampleGridCallback
    from talkinghead.config import compose
    from talkinghead.training.train import build_meta_learning

    with tempfile.TemporaryDirectory(prefix="talkinghead-sanity-") as tmp:
        cfg = compose("meta_learn", [*OVERRIDES, f"run_dir={run_dir or tmp}", "name=sanity", *overrides])
        run = build_meta_learning(cfg, extra_callbacks=[BlindLandmarks()] if blind else [])
        # nothing to show or score on held-out data here: one video only
        run.trainer.callbacks[:] = [c for c in run.trainer.callbacks
                                    if not isinstance(c, (MetricsCallback, SampleGridCallback))]
        start = time.time()
        run.trainer.fit(run.module, datamodule=run.datamodule)
        seconds = time.time() - start
        l1, mean_l1 = reconstruction_l1(run.module, episodes(run.datamodule, 16), blind)
    return SanityResult(l1, mean_l1, max_l1, int(run.module.iteration), seconds, blind)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m talkinghead.tools.sanity", description=__doc__.split("\n\n")[0])
    parser.add_argument("--blind-landmarks", action="store_true",
                        help="zero the landmark images (G cannot see its input): the check must fail")
    parser.add_argument("--max-l1", type=float, default=MAX_L1, help=f"the bound: a fraction of the median frame's L1 (default {MAX_L1})")
    parser.add_argument("overrides", nargs="*", help="meta_learn config overrides (key=value)")
    args = parser.parse_args(argv)
    from talkinghead.errors import TalkingHeadError

    try:
        result = sanity(args.overrides, blind=args.blind_landmarks, max_l1=args.max_l1)
    except TalkingHeadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.line())
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
