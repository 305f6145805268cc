"""Fine-tuning (paper Sec. 3.4): psi'/w' initialisation, FF changes nothing, FT learns, avatar files, bad input."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from finetune_helpers import tiny_checkpoint
from talkinghead.inference.avatar import (
    AvatarMismatchError,
    AvatarRenderer,
    CheckpointError,
    latest_checkpoint,
    load_avatar,
    load_meta_learned,
    save_avatar,
)
from talkinghead.cli import finetune_main
from talkinghead.inference.fewshot import FineTuneSettings, fit_avatar
from talkinghead.modules.finetune import FineTuningModule
from talkinghead.inference.shots import NotEnoughFramesError, UnknownIdError, evenly, resolve
from talkinghead.safe_load import safe_load


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("meta") / "run")


@pytest.fixture(scope="module")
def shots(ckpt):
    meta = load_meta_learned(ckpt)
    person = resolve("syn0005/v01", meta.config.data, meta.image_size, synthetic_video_length=64)
    return person.load(evenly(32, 4))


def states(*nets) -> list[dict[str, torch.Tensor]]:
    return [{k: v.clone() for k, v in n.state_dict().items()} for n in nets]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_psi_and_w_are_initialised_to_P_e_new_and_w0_plus_e_new(ckpt) -> None:
    meta = load_meta_learned(ckpt)
    torch.manual_seed(0)
    meta.discriminator.w0_b.parametrizations.weight.original.data.normal_()  # another w0, so the sum is really tested
    e_new = torch.rand(meta.discriminator.emb_dim)
    module = FineTuningModule(
        meta.generator, meta.discriminator, e_new, {"pixel": 1.0}, torch.optim.Adam, torch.optim.Adam
    )
    meta.generator.eval()
    with torch.no_grad():
        expected_psi = meta.generator.P(e_new[None])[0]
    assert torch.equal(module.psi.data, expected_psi)
    assert torch.equal(module.w_prime.data, meta.discriminator.w0.data + e_new)
    assert module.loss_weights["match"] == 0.0, "fine-tuning has no match term"


def test_fine_tuning_shares_the_adversarial_base_not_the_meta_learning_module(ckpt) -> None:
    """Fine-tuning takes D's step and the adversarial update from their shared base; it carries no embedder, no
    validation metric and no W optimiser of meta-learning's."""
    from talkinghead.modules.adversarial import AdversarialModule
    from talkinghead.modules.meta_learning import MetaLearningModule

    meta = load_meta_learned(ckpt)
    module = FineTuningModule(meta.generator, meta.discriminator, torch.zeros(meta.discriminator.emb_dim),
                              {"pixel": 1.0}, torch.optim.Adam, torch.optim.Adam)
    assert isinstance(module, AdversarialModule) and not isinstance(module, MetaLearningModule)
    assert not hasattr(module, "embedder") and not hasattr(module, "val_ssim")
    assert not any(name.startswith("embedder.") for name in module.state_dict())
    assert MetaLearningModule.discriminator_step is FineTuningModule.discriminator_step


def test_ff_changes_no_weight_and_psi_is_P_times_mean_embedding(ckpt, shots) -> None:
    meta = load_meta_learned(ckpt)
    before = states(meta.embedder, meta.generator, meta.discriminator)
    result = fit_avatar(meta, shots, mode="FF")
    after = states(meta.embedder, meta.generator, meta.discriminator)
    assert all(same(a, b) for a, b in zip(before, after)), "FF must not change any weight or buffer"
    assert result.avatar.generator_delta == {} and result.avatar.steps == 0
    with torch.no_grad():  # e_new = mean over the T frames of E(x_t, y_t), one frame at a time
        e = torch.stack(
            [meta.embedder(x[None], y[None])[0] for x, y in zip(shots["frames"], shots["landmark_images"])]
        ).mean(0)
        psi = meta.generator.P(e[None])[0]
    assert torch.allclose(result.avatar.e_new, e, atol=1e-5)
    assert torch.allclose(result.avatar.psi, psi, atol=1e-5)
    assert torch.allclose(result.avatar.w_prime, meta.discriminator.w0 + e, atol=1e-5)


def test_ft_trains_psi_lowers_l1_and_leaves_the_meta_model_alone(ckpt, shots) -> None:
    meta = load_meta_learned(ckpt)
    before = states(meta.generator, meta.discriminator)
    settings = FineTuneSettings.from_recipe(steps=25, epochs=None, lr_g=1e-3, lr_d=1e-3, batch_size=4)
    result = fit_avatar(meta, shots, mode="FT", settings=settings)
    ff = fit_avatar(meta, shots, mode="FF")
    assert result.avatar.steps == 25
    assert not torch.equal(result.avatar.psi, ff.avatar.psi), "psi' must be trained"
    assert result.avatar.generator_delta, "G's shared weights are fine-tuned too"
    assert result.l1_after < 0.9 * result.l1_before, (result.l1_before, result.l1_after)
    assert all(same(a, b) for a, b in zip(before, states(meta.generator, meta.discriminator)))


def test_avatar_round_trip_renders_identical_frames(ckpt, shots, tmp_path) -> None:
    meta = load_meta_learned(ckpt)
    result = fit_avatar(
        meta, shots, mode="FT", settings=FineTuneSettings.from_recipe(steps=3, epochs=None, batch_size=2), person_id="syn0005"
    )
    path = save_avatar(result.avatar, tmp_path / "a" / "avatar.pt")
    assert [p.name for p in path.parent.iterdir()] == ["avatar.pt"], "no temporary file left"
    loaded = load_avatar(path)
    renderer = AvatarRenderer(loaded, load_meta_learned(ckpt))
    y = shots["landmark_images"]
    assert torch.equal(renderer.render(y), result.render(y))
    assert loaded.T == 4 and loaded.mode == "FT" and loaded.person_id == "syn0005"
    # only what differs from the meta-learned model is stored
    assert set(loaded.generator_delta) < set(meta.generator.state_dict())


def test_avatar_with_another_model_is_a_clear_error(ckpt, shots, tmp_path) -> None:
    meta = load_meta_learned(ckpt)
    avatar = fit_avatar(meta, shots, mode="FF").avatar
    data = safe_load(ckpt)
    key = next(k for k in data["state_dict"] if k.startswith("generator.") and k.endswith("original"))
    data["state_dict"][key] = data["state_dict"][key] + 0.01
    other = tmp_path / "other.ckpt"
    torch.save(data, other)
    with pytest.raises(
        AvatarMismatchError,
        match=f"avatar was made from model {avatar.fingerprint}, this checkpoint is [0-9a-f]{{16}}",
    ):
        AvatarRenderer(avatar, load_meta_learned(other))
    avatar.model_config = {**avatar.model_config, "emb_dim": 64}
    with pytest.raises(AvatarMismatchError, match="emb_dim=64.*emb_dim=32"):
        AvatarRenderer(avatar, meta)


def test_checkpoint_of_another_model_size_is_a_clear_error(ckpt, tmp_path) -> None:
    data = safe_load(ckpt)
    data["hyper_parameters"]["config"]["model"]["generator"]["base_channels"] = 16
    bad = tmp_path / "bad.ckpt"
    torch.save(data, bad)
    with pytest.raises(CheckpointError, match="another model size"):
        load_meta_learned(bad)


def test_latest_checkpoint_is_the_newest_run(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="run make meta-learn first, or give CKPT="):
        latest_checkpoint(tmp_path)
    for i, name in enumerate(["b", "a"]):
        p = tmp_path / name / "checkpoints" / "last.ckpt"
        p.parent.mkdir(parents=True)
        p.write_bytes(b"x")
        os.utime(p, (time.time() + i, time.time() + i))
    assert latest_checkpoint(tmp_path) == tmp_path / "a" / "checkpoints" / "last.ckpt"


def test_finetune_stage_writes_an_avatar(ckpt, tmp_path) -> None:
    out = finetune_main(
        [
            f"ckpt={ckpt}",
            "id=syn0004",
            "T=3",
            "steps=2", "epochs=null",
            f"out_dir={tmp_path}",
            "logger=csv",
            "progress=false",
            "preview_frames=4",
        ]
    )
    assert out == tmp_path / "syn0004_T3_FT" / "avatar.pt"
    avatar = load_avatar(out)
    assert avatar.T == 3 and avatar.person_id == "syn0004" and avatar.steps == 2
    assert (out.parent / "samples.png").is_file() and (out.parent / "preview.mp4").is_file()
    assert not [p for p in out.parent.iterdir() if ".partial" in p.name]


def test_unknown_id_lists_close_matches(ckpt, tmp_path) -> None:
    with pytest.raises(UnknownIdError, match=r"unknown id 'syn0005/v1'.*close matches: .*syn0005/v01"):
        finetune_main([f"ckpt={ckpt}", "id=syn0005/v1", f"out_dir={tmp_path}", "~logger"])
    with pytest.raises(UnknownIdError, match="no such file or folder: /nowhere/video.mp4"):
        finetune_main([f"ckpt={ckpt}", "id=/nowhere/video.mp4", f"out_dir={tmp_path}", "~logger"])
    assert not any(tmp_path.iterdir()), "nothing may be written for a bad id"


def test_T_larger_than_the_frames_is_a_clear_error(ckpt, tmp_path) -> None:
    with pytest.raises(NotEnoughFramesError, match="T=65 needs 65 frames but syn0005/v01 has 64"):
        finetune_main([f"ckpt={ckpt}", "id=syn0005/v01", "T=65", f"out_dir={tmp_path}", "~logger"])
    assert not any(tmp_path.iterdir())


def test_finetune_on_a_users_video(ckpt, tmp_path) -> None:
    from conftest import OracleDetector, synthetic_heads, write_mp4

    heads = synthetic_heads(8, 2, seed=3)
    imgs, pts = zip(*(heads.render(7, 0, float(t), 96) for t in range(10)))
    oracle = OracleDetector()
    oracle.add(np.stack(imgs), np.stack(pts))
    video = tmp_path / "me.mp4"
    write_mp4(video, np.stack(imgs))
    out = finetune_main(
        [
            f"ckpt={ckpt}",
            f"id={video}",
            "T=4",
            "mode=FF",
            f"out_dir={tmp_path / 'av'}",
            "~logger",
            "progress=false",
        ],
        detector=oracle,
    )
    avatar = load_avatar(out)
    assert avatar.mode == "FF" and avatar.T == 4 and avatar.source == str(video)
    ref = avatar.reference_landmarks.numpy()
    # the embedded default is ibug68+iris: the 68 points and the irises the tracker located (NaN where absent)
    assert ref.shape == (72, 2) and (ref[:68] > 0).all() and (ref[:68] < 32).all(), "landmarks in the 32² crop"
    irises = ref[68:][np.isfinite(ref[68:]).all(1)]
    assert ((irises > 0) & (irises < 32)).all()


def test_epochs_count_passes_over_the_T_frames() -> None:
    from talkinghead.inference.fewshot import FineTuneSettings

    s = FineTuneSettings.from_config({"steps": 40, "epochs": 40, "batch_size": 4})
    assert [s.steps_for(T) for T in (1, 8, 32)] == [40, 80, 320]
    assert FineTuneSettings.from_config({"steps": 40, "epochs": None, "batch_size": 4}).steps_for(32) == 40


SETTINGS = ("steps", "epochs", "optimizer", "lr_g", "lr_d", "betas", "eps", "d_steps_per_g", "g_first",
            "average_decay", "batch_size", "loss_weights", "seed", "device")


def test_finetune_defaults_agree_with_the_one_fine_tuning_config_and_fsth() -> None:
    """FineTuneSettings.from_recipe(), `make finetune` and `make evaluate` read the same settings (experiments/finetuning/
    paper.yaml): FSTH's RAdam at 5e-4 / 8e-4 for ~560 iterations, averaged at 0.972, the paper's two D steps."""
    from talkinghead.config import compose
    from talkinghead.inference.fewshot import FineTuneSettings

    finetune = FineTuneSettings.from_config(compose("finetune", ["id=x"]))
    evaluate = FineTuneSettings.from_config(compose("evaluate").finetune)
    default = FineTuneSettings.from_recipe()
    for key in SETTINGS:
        assert getattr(finetune, key) == getattr(default, key) == getattr(evaluate, key), key
    assert (default.optimizer, default.lr_g, default.lr_d) == ("radam", 5e-4, 8e-4)
    assert (default.steps, default.epochs) == (560, None)
    assert (default.d_steps_per_g, default.betas, default.average_decay) == (2, (0.0, 0.999), 0.972)


def test_one_change_to_the_fine_tuning_config_reaches_both_stages(tmp_path) -> None:
    """No copy to forget: editing experiments/finetuning/paper.yaml changes `make finetune` and `make evaluate`."""
    import shutil

    from talkinghead.config import compose

    configs = tmp_path / "experiments"
    shutil.copytree(Path(__file__).resolve().parents[1] / "experiments", configs)
    recipe = configs / "finetuning" / "paper.yaml"
    recipe.write_text(recipe.read_text().replace("lr_g: 5.0e-4", "lr_g: 7.0e-4"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TALKINGHEAD_CONFIG_DIR", str(configs))
        assert compose("finetune", ["id=x"]).lr_g == 7e-4 == compose("evaluate").finetune.lr_g
        assert compose("finetune", ["id=x", "lr_g=1e-3"]).lr_g == 1e-3, "command-line overrides still win"
        assert compose("evaluate", ["finetune.lr_g=1e-3"]).finetune.lr_g == 1e-3


def test_fine_tuning_prints_no_lightning_banner_and_reports_each_step(ckpt, shots, capfd) -> None:
    """``make evaluate`` fine-tunes 60 avatars: Lightning's banner must not be printed for each."""
    meta = load_meta_learned(ckpt)
    seen: list[tuple[int, int]] = []
    fit_avatar(meta, shots, mode="FT", settings=FineTuneSettings.from_recipe(steps=3, epochs=None, batch_size=2),
               on_step=lambda i, n: seen.append((i, n)))
    out = "".join(capfd.readouterr())
    for banner in ("GPU available", "litlogger", "validation_step", "TPU available", "LeafSpec"):
        assert banner not in out, f"{banner!r} printed:\n{out}"
    assert seen and seen[-1] == (3, 3) and [i for i, _ in seen] == sorted(i for i, _ in seen)


def test_rendering_an_ft_avatar_leaves_the_loaded_model_alone(ckpt, shots) -> None:
    meta = load_meta_learned(ckpt)
    before = states(meta.generator)
    result = fit_avatar(meta, shots, mode="FT", settings=FineTuneSettings.from_recipe(steps=2, epochs=None, batch_size=2))
    assert result.avatar.generator_delta
    AvatarRenderer(result.avatar, meta)
    assert same(before[0], states(meta.generator)[0]), "a cached model (the demo's) must stay the meta-learned one"
