"""Fine-tuning's numbers live once, in experiments/finetuning/<recipe>.yaml; each model names its recipe; the
stopping rule ends fine-tuning when the reconstruction stops improving."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from finetune_helpers import tiny_checkpoint
from talkinghead.inference.avatar import load_meta_learned
from talkinghead.config import compose
from talkinghead.errors import ConfigError
from talkinghead.inference.fewshot import FineTuneSettings, StopWhenFlat, fit_avatar, recipe, settings_for
from talkinghead.inference.shots import evenly, resolve

REPO = Path(__file__).resolve().parents[1]


def test_no_fine_tuning_number_is_written_in_the_code() -> None:
    """FineTuneSettings has no default for any recipe key: a config missing a key gets the recipe's value."""
    paper = recipe("paper")
    empty = FineTuneSettings.from_config({})
    for key in ("steps", "lr_g", "lr_d", "eps", "d_steps_per_g", "batch_size", "average_decay", "optimizer"):
        assert getattr(empty, key) == paper[key], key
    source = (REPO / "src" / "talkinghead" / "inference" / "fewshot.py").read_text()
    block = source[source.index("class FineTuneSettings"):source.index("def steps_for")]
    assert not re.search(r"(steps|lr_g|lr_d|eps|batch_size|average_decay): [^=\n]+= \d", block), \
        "a recipe number written into FineTuneSettings"


def test_each_model_gets_the_recipe_its_experiment_names() -> None:
    embedded = compose("meta_learn", ["experiment=embedded"])
    paper = compose("meta_learn", ["experiment=vox2_paper"])
    assert settings_for(embedded).recipe == "embedded"
    assert settings_for(paper).recipe == "paper"
    assert settings_for(OmegaConf.create({"model": {}})).recipe == "paper", "a checkpoint that names none: paper"
    s = settings_for(embedded, {"steps": 7})
    assert s.steps == 7 and s.lr_g == recipe("embedded")["lr_g"]
    with pytest.raises(ConfigError, match="no fine-tuning recipe 'nope'.*known .*paper"):
        settings_for(embedded, recipe_name="nope")


def _run_rule(values: list[float], window: int, min_gain: float, patience: int) -> int | None:
    rule = StopWhenFlat(window, min_gain, patience, {"pixel": 2.0, "adversarial": 1.0})
    trainer = SimpleNamespace(callback_metrics={}, should_stop=False)
    for it, v in enumerate(values, start=1):
        trainer.callback_metrics = {"finetune/g_pixel": v, "finetune/g_adversarial": 100.0 * it}
        rule.on_train_batch_end(trainer, SimpleNamespace(iteration=it))
        if trainer.should_stop:
            return rule.stopped_at
    return None


def test_the_stopping_rule_waits_while_the_reconstruction_improves_and_stops_when_it_is_flat() -> None:
    falling = [1.0 / (1 + i) for i in range(40)]
    assert _run_rule(falling, window=5, min_gain=0.02, patience=2) is None, "still improving: no stop"
    flat_after_10 = [1.0 / (1 + i) for i in range(10)] + [0.1] * 30
    assert _run_rule(flat_after_10, window=5, min_gain=0.02, patience=2) == 25, "windows 16-20 and 21-25 are flat"
    assert _run_rule(flat_after_10, window=5, min_gain=0.02, patience=3) == 30
    noisy_flat = [0.1 + 0.001 * (-1) ** i for i in range(30)]
    assert _run_rule(noisy_flat, window=5, min_gain=0.02, patience=2) == 15


@pytest.fixture(scope="module")
def meta_and_shots(tmp_path_factory):
    meta = load_meta_learned(tiny_checkpoint(tmp_path_factory.mktemp("meta") / "run"))
    person = resolve("syn0005/v01", meta.config.data, meta.image_size, synthetic_video_length=64)
    return meta, person.load(evenly(32, 4))


def test_fine_tuning_stops_early_under_the_rule_and_records_the_steps_it_ran(meta_and_shots) -> None:
    meta, shots = meta_and_shots
    settings = FineTuneSettings.from_recipe(steps=40, epochs=None, batch_size=2, early_stop_window=2,
                                            early_stop_min_gain=0.99, early_stop_patience=1)
    result = fit_avatar(meta, shots, mode="FT", settings=settings)
    assert result.avatar.steps == 4, "a 99 % gain per window is never met: stop after the second window"
    full = fit_avatar(meta, shots, mode="FT",
                      settings=FineTuneSettings.from_recipe(steps=6, epochs=None, batch_size=2))
    assert full.avatar.steps == 6


def test_the_page_make_finetune_and_make_evaluate_fine_tune_with_the_same_settings(tmp_path, monkeypatch) -> None:
    """Each surface reads what it ran with: the avatar file's finetune_settings (the page, make finetune) and
    the settings evaluate handed to fit_avatar.  The embedded recipe is shortened in a copy of the configs."""
    pytest.importorskip("gradio", reason="the demo extra is not installed")
    import shutil

    from talkinghead.evaluation import evaluate as evaluate_mod
    from talkinghead.inference.avatar import load_avatar
    from talkinghead.cli import finetune_main
    from talkinghead.demo import Demo, DemoConfig

    configs = tmp_path / "experiments"
    shutil.copytree(REPO / "experiments", configs)
    recipe_file = configs / "finetuning" / "embedded.yaml"
    text = recipe_file.read_text()
    assert "steps: 240" in text, "the test shortens the embedded recipe: it must find its length"
    recipe_file.write_text(text.replace("steps: 240", "steps: 3"))
    monkeypatch.setenv("TALKINGHEAD_CONFIG_DIR", str(configs))
    ckpt = tiny_checkpoint(tmp_path / "runs" / "tiny")

    cli_avatar = finetune_main(["id=syn0005/v01", "T=2", f"ckpt={ckpt}", "~logger", f"out_dir={tmp_path}/cli",
                                "progress=false"])
    demo = Demo(DemoConfig(runs_dir=tmp_path / "runs", avatars_dir=tmp_path / "runs" / "avatars",
                           evaluate_dir=tmp_path / "runs" / "evaluate", temp_base=tmp_path / "tmp"))
    demo.make_avatar(None, None, demo.held_out[0], 2, "FT", 0)
    page_avatar = next((tmp_path / "tmp").rglob("avatar.pt"), None) or next((tmp_path / "runs" / "avatars").rglob("avatar.pt"))
    seen = []
    real = evaluate_mod.fit_avatar

    def spy(*args, settings=None, **kwargs):
        seen.append(settings.as_dict())
        return real(*args, settings=settings, **kwargs)

    monkeypatch.setattr(evaluate_mod, "fit_avatar", spy)
    evaluate_mod.evaluate_main([f"ckpt={ckpt}", "T_values=[1]", "methods=[FT]", "num_targets=2", "max_videos=1",
                                f"out_dir={tmp_path}/ev", "~logger", "progress=false"])
    used = {"make finetune": load_avatar(cli_avatar).finetune_settings,
            "page": load_avatar(page_avatar).finetune_settings, "make evaluate": seen[0]}
    for surface, settings in used.items():
        assert settings["recipe"] == "embedded" and settings["steps"] == 3, (surface, settings)
        assert settings == used["make finetune"], f"{surface} fine-tuned with other settings"
    assert load_avatar(cli_avatar).steps == 3


def test_a_command_line_is_merged_over_the_models_recipe_by_hydra() -> None:
    """The line's keys, nested ones too, land on the model's recipe; a line that names a recipe keeps it."""
    from talkinghead.evaluation.evaluate import compose_evaluate
    from talkinghead.inference.fewshot import recipe_overrides

    embedded = compose("meta_learn", ["experiment=embedded"])
    name, line = recipe_overrides(embedded, ["finetune.steps=7", "finetune.loss_weights={pixel: 3.0}"],
                                  group="finetuning@finetune")
    assert (name, line[0]) == ("embedded", "finetuning@finetune=embedded")
    s = FineTuneSettings.from_config(compose_evaluate(line).finetune, recipe_name=name)
    assert s.steps == 7 and s.loss_weights == {"pixel": 3.0} and s.early_stop_window == recipe("embedded")["early_stop_window"]
    assert recipe_overrides(embedded, ["finetuning=paper", "steps=9"]) == ("paper", ["finetuning=paper", "steps=9"])
