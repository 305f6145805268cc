"""The running average of E and G (FSTH's ``update_running_average``): an exact EMA of the trained weights, saved
in checkpoints beside them, resumed, and the weights that fine-tuning's e_new, FF and reenactment use."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune_helpers import tiny_checkpoint
from talkinghead.inference.avatar import AvatarRenderer, load_meta_learned
from talkinghead.callbacks.weight_average import CHECKPOINT_KEY, WeightAverage
from talkinghead.inference.fewshot import FineTuneSettings, embed_person, fit_avatar
from talkinghead.modules.finetune import initial_psi
from talkinghead.inference.shots import evenly, resolve
from talkinghead.safe_load import safe_load

PLAIN = ["speed=plain", "trainer.precision=32-true"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("wa") / "run", iterations=4,
                           extra=[*PLAIN, "callbacks.weight_average.decay=0.5"])


def test_the_average_is_the_ema_of_the_trained_weights_per_iteration(tmp_path: Path) -> None:
    """Recorded weights after each iteration, averaged by hand at decay 0.5, equal the saved average."""
    import pytorch_lightning as pl

    seen: list[dict[str, torch.Tensor]] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, module, *a, **k) -> None:
            seen.append({f"generator.{n}": p.detach().clone() for n, p in module.generator.named_parameters()})

    from finetune_helpers import QUIET, TINY_MODEL, TINY_SYNTHETIC_DATA
    from talkinghead.config import compose
    from talkinghead.training.train import build_meta_learning

    cfg = compose("meta_learn", [*QUIET, *TINY_MODEL, *TINY_SYNTHETIC_DATA, *PLAIN, "K=2", "iterations=3",
                                 f"run_dir={tmp_path}", "callbacks.weight_average.decay=0.5"])
    run = build_meta_learning(cfg, extra_callbacks=[Record()])
    run.trainer.num_sanity_val_steps = 0
    run.fit()
    data = safe_load(tmp_path / "checkpoints" / "last.ckpt")
    saved = data[CHECKPOINT_KEY]
    assert saved["decay"] == 0.5 and saved["n_averaged"] == 3 == len(seen)
    name = "generator.P.parametrizations.weight.original"
    expected = seen[0][name]
    for s in seen[1:]:
        expected = 0.5 * expected + 0.5 * s[name]
    assert torch.allclose(saved["state_dict"][name], expected, atol=1e-7)
    # the trained weights stay in state_dict (resuming trains them), and differ from the average
    assert torch.equal(data["state_dict"][name], seen[-1][name])
    assert not torch.allclose(data["state_dict"][name], expected)
    assert not any(k.startswith("discriminator.") for k in saved["state_dict"]), "D is not averaged (FSTH)"
    assert any(k.startswith("embedder.") for k in saved["state_dict"])
    assert not any("WeightAverage" in k for k in data.get("callbacks", {})), "the average is stored once"


def test_resuming_continues_the_saved_average(tmp_path: Path) -> None:
    first = tiny_checkpoint(tmp_path, iterations=2, extra=[*PLAIN, "callbacks.weight_average.decay=0.5"])
    before = safe_load(first)[CHECKPOINT_KEY]
    again = tiny_checkpoint(tmp_path, iterations=3, extra=[*PLAIN, "callbacks.weight_average.decay=0.5"])
    after = safe_load(again)
    assert after[CHECKPOINT_KEY]["n_averaged"] == before["n_averaged"] + 1 == 3
    name = "generator.P.parametrizations.weight.original"
    expected = 0.5 * before["state_dict"][name] + 0.5 * after["state_dict"][name]
    assert torch.allclose(after[CHECKPOINT_KEY]["state_dict"][name], expected, atol=1e-7)


def test_loading_uses_the_average_and_keeps_the_trained_generator(ckpt: Path) -> None:
    data = safe_load(ckpt)
    avg, trained = data[CHECKPOINT_KEY]["state_dict"], data["state_dict"]
    meta = load_meta_learned(ckpt)
    raw = load_meta_learned(ckpt, average=False)
    assert meta.averaged and not raw.averaged and raw.trained_generator_state is None
    name = "P.parametrizations.weight.original"
    assert torch.equal(meta.generator.state_dict()[name], avg[f"generator.{name}"])
    assert torch.equal(meta.trained_generator_state[name], trained[f"generator.{name}"])
    assert torch.equal(raw.generator.state_dict()[name], trained[f"generator.{name}"])
    e = "blocks.0.conv1.parametrizations.weight.original"
    e_key = next(k for k in avg if k.startswith("embedder.") and k.endswith("weight.original"))
    assert torch.equal(meta.embedder.state_dict()[e_key[len("embedder."):]], avg[e_key]), e
    assert meta.fingerprint != raw.fingerprint  # avatars say which weights they were made from
    # D is never averaged
    for k, v in meta.discriminator.state_dict().items():
        assert torch.equal(v, raw.discriminator.state_dict()[k])


def test_fine_tuning_starts_from_the_trained_G_embeds_with_the_average_and_renders_the_average(ckpt: Path) -> None:
    meta = load_meta_learned(ckpt)
    person = resolve("syn0005/v01", meta.config.data, meta.image_size, synthetic_video_length=64)
    shots = person.load(evenly(32, 3))
    ff = fit_avatar(meta, shots, mode="FF")
    assert torch.equal(ff.avatar.e_new, embed_person(meta.embedder, shots["frames"], shots["landmark_images"]))
    assert torch.equal(ff.avatar.psi, initial_psi(meta.generator, ff.avatar.e_new))  # FF: the averaged G's P
    settings = FineTuneSettings.from_recipe(steps=3, batch_size=2, average_decay=0.5, device="cpu")
    ft = fit_avatar(meta, shots, mode="FT", settings=settings)
    no_avg = fit_avatar(meta, shots, mode="FT", settings=FineTuneSettings.from_recipe(steps=3, batch_size=2, average_decay=None,
                                                                        device="cpu"))
    assert not torch.allclose(ft.avatar.psi, no_avg.avatar.psi), "the FT avatar is the average, not the last step"
    # with zero learning rates fine-tuning leaves its start: the trained G (FSTH), psi' = P_trained e_new
    still = fit_avatar(meta, shots, mode="FT", settings=FineTuneSettings.from_recipe(steps=2, batch_size=2, lr_g=0.0, lr_d=0.0,
                                                                         average_decay=None, device="cpu"))
    trained = load_meta_learned(ckpt, average=False)
    assert torch.allclose(still.avatar.psi, initial_psi(trained.generator, ff.avatar.e_new))
    assert not torch.allclose(still.avatar.psi, ff.avatar.psi), "the averaged G's P would give FF's psi' (row 68)"
    # the avatar renders over the averaged meta-learned G exactly as fine-tuning left it
    from talkinghead.speed import Speed

    renderer = AvatarRenderer(ft.avatar, load_meta_learned(ckpt), speed=Speed.plain())
    ft.speed = Speed.plain()
    y = shots["landmark_images"]
    assert torch.allclose(renderer.render(y), ft.render(y), atol=1e-6)


def test_a_bad_decay_is_refused() -> None:
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(1.0)


def test_sample_grids_and_metrics_render_with_the_average_and_put_the_trained_weights_back() -> None:
    """Inside ``swapped_in`` the networks hold the average (a render differs from the trained weights' one), after
    it, also after an exception, exactly the trained weights; before the average exists nothing is swapped."""
    import pytorch_lightning as pl
    from torch import nn

    from talkinghead.callbacks.weight_average import averaged_weights

    torch.manual_seed(0)
    module = nn.Module()
    module.embedder, module.generator = nn.Linear(3, 3), nn.Linear(3, 2)
    cb = WeightAverage(decay=0.5)
    trainer = pl.Trainer(callbacks=[cb], logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    x = torch.randn(4, 3)
    with averaged_weights(trainer, module) as swapped:
        assert swapped is False
    cb.on_train_start(trainer, module)          # the average starts as a copy of the trained weights
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)                          # training moves them on; the average still holds the start
    trained = {k: v.clone() for k, v in module.state_dict().items()}
    plain = module.generator(module.embedder(x))
    with averaged_weights(trainer, module) as swapped:
        assert swapped is True
        inside = module.generator(module.embedder(x))
        assert torch.equal(module.generator.weight, cb.average.module.generator.weight)
    assert not torch.allclose(inside, plain)
    assert all(torch.equal(v, trained[k]) for k, v in module.state_dict().items())
    with pytest.raises(RuntimeError, match="boom"):
        with averaged_weights(trainer, module):
            raise RuntimeError("boom")
    assert all(torch.equal(v, trained[k]) for k, v in module.state_dict().items())
