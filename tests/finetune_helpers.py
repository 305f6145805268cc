"""A tiny meta-learned checkpoint (real pipeline: compose -> build -> fit), for the fine-tuning/reenactment/
evaluation tests."""

from __future__ import annotations

from pathlib import Path

TINY_MODEL = [
    "model.image_size=32",
    "model.emb_dim=32",
    *[
        f"model.{n}.{k}={v}"
        for n in ("embedder", "generator", "discriminator")
        for k, v in (("base_channels", 8), ("max_channels", 32))
    ],
    "model.embedder.attn_res=16",
    "model.discriminator.attn_res=16",
    "model.generator.attn_res_down=16",
    "model.generator.attn_res_up=16",
    "model.generator.num_down=2",
    "model.generator.num_res=1",
]
TINY_SYNTHETIC_DATA = [
    "data.num_identities=6",
    "data.test_identities=2",
    "data.videos_per_identity=2",
    "data.frames_per_video=8",
    "data.heldout_frames=4",
    "data.batch_size=2",
]
QUIET = [
    "~logger",
    "callbacks.val_every_n_iterations=1000",
    "callbacks.sample_every_n_iterations=1000",
    "callbacks.ckpt_every_n_iterations=1000",
    "trainer.enable_progress_bar=false",
]


def tiny_checkpoint(
    run_dir: Path, iterations: int = 3, data: list[str] | None = None, extra: list[str] | None = None
) -> Path:
    """Meta-learn a 32² model with 8-32 channels for a few iterations (K=2); returns its last.ckpt.

    ``data``: data overrides (default: a small synthetic population of 6 identities, 2 held out);
    ``extra``: more overrides (e.g. ``loss.weights.match=0``).
    """
    from talkinghead.config import compose
    from talkinghead.training.train import build_meta_learning

    data = TINY_SYNTHETIC_DATA if data is None else data
    cfg = compose(
        "meta_learn", [*QUIET, *TINY_MODEL, *data, "K=2", f"iterations={iterations}", f"run_dir={run_dir}", *(extra or [])]
    )
    run = build_meta_learning(cfg)
    run.trainer.num_sanity_val_steps = 0
    run.fit()
    return run_dir / "checkpoints" / "last.ckpt"
