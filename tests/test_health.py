"""The health monitor names each failure mode injected into a tiny run, and keeps quiet on a healthy one."""
from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from helpers import FixedEpisodes, tiny_module
from talkinghead.callbacks.health import HealthConfig, HealthMonitor, between_within_ratio
from talkinghead.errors import ConfigError, NonFiniteError
from talkinghead.safe_load import safe_load

FAST = dict(warmup_iterations=5, window=10, every_n_iterations=5)


class PersonEpisodes(Dataset):
    """``FixedEpisodes`` of 4 videos, two per person (``person_id``), for the between/within ratio."""

    def __init__(self, persons: int = 2, size: int = 16) -> None:
        self.eps = FixedEpisodes(n=4, K=2, size=size, repeat=1000)
        self.persons = persons

    def __len__(self) -> int:
        return len(self.eps)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.eps[i])
        item["person_id"] = f"p{(i % 4) * self.persons // 4}"
        return item


def run_tiny(iterations: int = 25, inject=None, batch_size: int = 4, persons: int = 2, **health) -> HealthMonitor:
    """A tiny run (16², 4 videos) with the monitor; ``inject(module)`` breaks something first."""
    pl.seed_everything(0, verbose=False)
    module = tiny_module(num_videos=4, size=16, lr=1e-3, match=0.01)  # match 10 kills e_hat (see loss/synthetic)
    if inject is not None:
        inject(module)
    monitor = HealthMonitor({**FAST, **health}, match_weight=0.01)
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=2 * iterations, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[monitor], precision="32-true",
        val_check_interval=10, check_val_every_n_epoch=None, limit_val_batches=1, num_sanity_val_steps=0,
    )
    data = PersonEpisodes(persons)
    trainer.fit(module, DataLoader(data, batch_size=batch_size), DataLoader(data, batch_size=4))
    return monitor


def warned(monitor: HealthMonitor) -> list[str]:
    return sorted(monitor.warned)


def test_a_healthy_tiny_run_gets_no_warning(capfd) -> None:
    monitor = run_tiny()
    assert warned(monitor) == [], monitor.events
    assert monitor.notes == {}, "every check was computed"
    assert {"health/d_gap", "health/g_spread_ratio", "health/e_norm", "health/w_e_dist"} <= set(monitor.values)
    err = capfd.readouterr().err
    summary = [line for line in err.splitlines() if line.startswith("health: summary")]
    assert len(summary) == 1 and "no warnings" in summary[0], err[-2000:]


def test_a_non_finite_loss_term_stops_the_run_naming_it_and_the_iteration(capfd) -> None:
    def nan_pixel_from_iteration_7(module) -> None:
        orig = module.generator_terms

        def terms(*args, **kwargs):
            t = orig(*args, **kwargs)
            if module.iteration >= 7:  # the 8th G update
                t["pixel"] = t["pixel"] * float("nan")
            return t

        module.generator_terms = terms

    with pytest.raises(NonFiniteError, match=r"non-finite train/g_pixel .*from iteration 8"):
        run_tiny(inject=nan_pixel_from_iteration_7)
    lines = capfd.readouterr().err.splitlines()
    stop = [ln for ln in lines if ln.startswith("health: nonfinite")]
    assert stop == ["health: nonfinite at iteration 8: train/g_pixel (loss term) is not finite; training stopped"]
    assert sum(ln.startswith("health: summary") for ln in lines) == 1


def test_a_zeroed_embedder_is_named_collapsed_and_ignored() -> None:
    def zero_embedder(module) -> None:
        orig = module.embedder.forward
        module.embedder.forward = lambda x, y: orig(x, y) * 0.0

    monitor = run_tiny(inject=zero_embedder)
    assert "e_collapsed" in warned(monitor), monitor.events
    assert "e_ignored" in warned(monitor), "all e_hat equal: validation persons indistinguishable"


def test_a_discriminator_that_always_wins_is_named_saturated() -> None:
    def d_always_wins(module) -> None:
        orig = module.discriminator.forward

        def forward(x, y, idx=None, w=None):
            scores, feats = orig(x, y, idx, w)
            b = scores.shape[0] // 2  # real first, then fake (one batch)
            return torch.cat([scores[:b] + 10.0, scores[b:] - 10.0]), feats

        module.discriminator.forward = forward

    monitor = run_tiny(inject=d_always_wins)
    assert warned(monitor) == ["d_saturated"], monitor.events
    assert monitor.events[0][2].startswith("health: d_saturated at iteration ")


def test_a_generator_that_outputs_a_constant_is_named_collapsed() -> None:
    def constant_generator(module) -> None:
        orig = module.generator.forward
        module.generator.forward = lambda y, e: orig(y, e) * 0.0 + 0.5

    monitor = run_tiny(inject=constant_generator)
    assert "g_collapsed" in warned(monitor), monitor.events


def test_checks_that_cannot_be_computed_say_so_once_and_never_crash(capfd) -> None:
    monitor = run_tiny(iterations=25, batch_size=1, persons=1)
    assert "batch size 1" in monitor.notes["g_collapsed"]
    assert "1 validation person" in monitor.notes["e_ignored"]
    err = capfd.readouterr().err
    assert err.count("health: g_collapsed not checked") == 1 and err.count("health: e_ignored not checked") == 1
    assert "not checked: " in [ln for ln in err.splitlines() if ln.startswith("health: summary")][0]


@pytest.mark.parametrize("key, value, message", [
    ("window", -5, r"callbacks\.health\.window must be a whole number >= 1, got -5"),
    ("warmup_iterations", 1.5, r"warmup_iterations must be a whole number >= 0"),
    ("e_ratio_min", 0.5, r"e_ratio_min must be a number in \[1, inf\], got 0.5"),
    ("g_spread_ratio", 2, r"g_spread_ratio must be a number in \[0, 1\]"),
    ("w_e_growth", 1, r"w_e_growth must be a number in \(1, inf\]"),
    ("windw", 3, r"unknown key\(s\) \['windw'\] in callbacks\.health"),
])
def test_nonsense_thresholds_are_one_line_config_errors(key, value, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        HealthConfig.from_config({key: value})
    assert "\n" not in str(info.value)


def test_the_default_config_block_is_valid_and_reaches_the_run(tmp_path: Path) -> None:
    from talkinghead.config import compose
    from talkinghead.training.train import build_meta_learning

    cfg = compose("meta_learn", ["logger=csv", f"run_dir={tmp_path}", "callbacks.health.window=-3"])
    with pytest.raises(ConfigError, match="callbacks.health.window must be"):
        build_meta_learning(cfg)
    base = compose("meta_learn", [])
    assert HealthConfig.from_config(dict(base.callbacks.health)).window == base.callbacks.health.window


def test_between_within_ratio() -> None:
    e = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.1, 0.0]])
    ratio, _ = between_within_ratio(["a", "a", "b", "b"], e)
    assert ratio > 10
    ratio, _ = between_within_ratio(["a", "b", "a", "b"], e)  # persons mixed up: between ~ within
    assert ratio < 1.05
    assert between_within_ratio(["a", "a"], e[:2])[0] is None
    assert between_within_ratio(["a", "b"], e[:2])[0] is None


# ------------------------------------------------------------------------------------ checkpoints and resume
TINY_RUN = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.precision=32-true",
            "callbacks.val_every_n_iterations=100000", "callbacks.sample_every_n_iterations=100000",
            "callbacks.metrics_every_n_iterations=0", "callbacks.ckpt_every_n_iterations=2",
            "data.num_identities=4", "data.test_identities=1", "data.videos_per_identity=1", "data.batch_size=2",
            "data.samples_per_epoch=8", "K=2", "model.image_size=16", "model.emb_dim=16",
            "model.embedder.base_channels=8", "model.embedder.max_channels=16", "model.embedder.attn_res=null",
            "model.generator.base_channels=8", "model.generator.max_channels=16", "model.generator.num_down=2",
            "model.generator.num_res=1", "model.generator.attn_res_down=null", "model.generator.attn_res_up=null",
            "model.discriminator.base_channels=8", "model.discriminator.max_channels=16",
            "model.discriminator.attn_res=null"]


def test_after_a_non_finite_stop_the_newest_checkpoint_is_finite_and_resumes(tmp_path: Path) -> None:
    from talkinghead.config import compose
    from talkinghead.training.train import build_meta_learning

    overrides = [*TINY_RUN, "iterations=8", f"run_dir={tmp_path}"]
    run = build_meta_learning(compose("meta_learn", overrides))
    module = run.module
    orig = module.generator_terms

    def terms(*args, **kwargs):
        t = orig(*args, **kwargs)
        if module.iteration >= 4:  # the 5th G update: checkpoints at 2 and 4 are good, the one at 6 would not be
            t["adversarial"] = t["adversarial"] * float("inf")
        return t

    module.generator_terms = terms
    with pytest.raises(NonFiniteError, match=r"last good checkpoint is .*last\.ckpt \(iteration 4\)"):
        run.fit()
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = safe_load(last)
    assert saved["global_step"] == 4 * (1 + int(run.cfg.optim.d_steps_per_g))
    for name, t in saved["state_dict"].items():
        assert torch.isfinite(t).all(), name
    for state in saved["optimizer_states"]:
        for s in state["state"].values():
            assert all(torch.isfinite(v).all() for v in s.values() if torch.is_tensor(v) and v.is_floating_point())

    resumed = build_meta_learning(compose("meta_learn", overrides))
    assert resumed.ckpt_path == last
    resumed.fit()
    assert resumed.module.iteration == 8
    assert all(torch.isfinite(p).all() for p in resumed.module.parameters())


def test_the_nonfinite_check_reads_sparse_row_gradients() -> None:
    from talkinghead.callbacks.health import first_nonfinite

    table = torch.nn.Embedding(10, 4, sparse=True)
    table(torch.tensor([1, 3])).sum().backward()
    assert table.weight.grad.is_sparse
    assert first_nonfinite([("W.grad", table.weight.grad), ("dense", torch.ones(3))]) is None
    bad = torch.sparse_coo_tensor(torch.tensor([[2]]), torch.tensor([[float("nan")] * 4]), (10, 4))
    assert first_nonfinite([("dense", torch.ones(3)), ("W.grad", bad)]) == "W.grad"
