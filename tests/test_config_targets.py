"""Configs all the way down: every experiment composed and instantiated builds, by `_target_`, the module, its networks,
its loss weights and its callbacks that the experiment's values say; a bad target is one line."""
from __future__ import annotations

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from talkinghead.training.build import build_module
from talkinghead.callbacks.health import HealthMonitor
from talkinghead.callbacks.metrics import MetricsCallback
from talkinghead.callbacks.samples import SampleGridCallback
from talkinghead.callbacks.weight_average import WeightAverage
from talkinghead.config import compose, config_dir
from talkinghead.errors import ConfigError
from talkinghead.losses.terms import GENERATOR_TERMS
from talkinghead.modules.meta_learning import MetaLearningModule
from talkinghead.training.train import build_callbacks

EXPERIMENTS = sorted(p.stem for p in (config_dir() / "experiment").glob("*.yaml"))


def _count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_builds_what_its_values_say(experiment: str, tmp_path) -> None:
    assert "embedded" in EXPERIMENTS and "vox2_paper" in EXPERIMENTS
    cfg = compose("meta_learn", [f"experiment={experiment}", "data.root=/x", f"run_dir={tmp_path}"]
                  if experiment != "embedded" else [f"run_dir={tmp_path}"])
    module = build_module(cfg, num_videos=3, content_loss=nn.Identity())  # the VGGs' weight files are not here
    assert type(module) is MetaLearningModule
    assert module.loss_weights == {k: float(cfg.loss.weights.get(k, 0.0)) for k in GENERATOR_TERMS}
    assert (module.d_steps_per_g, module.g_first, module.w_from_fakes) == (
        cfg.optim.d_steps_per_g, cfg.optim.g_first, cfg.loss.w_from_fakes)
    for role in ("embedder", "generator"):  # the networks: the classes the model config names, at its sizes
        node = OmegaConf.to_container(cfg.model[role])
        assert _count(getattr(module, role)) == _count(instantiate(node)) > 0
    assert module.discriminator.w_table.shape[0] == 3

    callbacks = build_callbacks(cfg.callbacks.build)
    assert [type(c) for c in callbacks] == [SampleGridCallback, MetricsCallback, WeightAverage, HealthMonitor]
    samples, metrics, average, health = callbacks
    assert str(samples.out_dir) == f"{tmp_path}/samples" and samples.every == cfg.callbacks.sample_every_n_iterations
    assert metrics.every == cfg.callbacks.metrics_every_n_iterations
    assert average.decay == cfg.callbacks.weight_average.decay
    assert health.match_weight == cfg.loss.weights.match


def test_callbacks_can_be_left_out_and_added_by_config(tmp_path) -> None:
    cfg = compose("meta_learn", [f"run_dir={tmp_path}", "callbacks.build.samples=null",
                                 "callbacks.weight_average.enabled=false",
                                 "+callbacks.build.lr={_target_: pytorch_lightning.callbacks.LearningRateMonitor}"])
    names = [type(c).__name__ for c in build_callbacks(cfg.callbacks.build)]
    assert names == ["MetricsCallback", "HealthMonitor", "LearningRateMonitor"]


@pytest.mark.parametrize("target, said", [
    ("talkinghead.callbacks.samples.SampleGridCallbak",
     "callbacks.build.mine: cannot build talkinghead.callbacks.samples.SampleGridCallbak: no such class or function; "
     "did you mean talkinghead.callbacks.samples.SampleGridCallback?"),
    ("collections.OrderedDict", "callbacks.build.mine built a OrderedDict, not a Lightning callback"),
])
def test_an_unknown_callback_is_one_line(target: str, said: str, tmp_path) -> None:
    cfg = compose("meta_learn", [f"run_dir={tmp_path}", f"+callbacks.build.mine={{_target_: {target}}}"])
    with pytest.raises(ConfigError) as e:
        build_callbacks(cfg.callbacks.build)
    assert str(e.value) == said


def test_a_module_target_that_is_no_meta_learning_module_is_one_line(tmp_path) -> None:
    cfg = compose("meta_learn", [f"run_dir={tmp_path}", "module._target_=talkinghead.modules.meta_learning.MetaLearnngModule"])
    with pytest.raises(ConfigError, match="did you mean talkinghead.modules.meta_learning.MetaLearningModule"):
        build_module(cfg, num_videos=2)
