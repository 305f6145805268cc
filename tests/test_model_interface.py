"""The model interface (talkinghead.nets.interface): a second, toy model (tests/toy_model.py plus its config
tests/configs/model/toy.yaml, no other file) runs meta-learning, fine-tuning, reenactment, export and evaluation;
a class that lacks part of the interface, or a checkpoint whose config asks Hydra for another call, is one line."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from finetune_helpers import QUIET, TINY_SYNTHETIC_DATA
from toy_model import ToyGenerator

from talkinghead import api
from talkinghead.inference.avatar import AvatarRenderer, CheckpointError, load_avatar, load_meta_learned
from talkinghead.config import compose
from talkinghead.errors import ConfigError
from talkinghead.evaluation.evaluate import evaluate_main
from talkinghead.inference.fewshot import FineTuneSettings
from talkinghead.training.train import build_meta_learning
from talkinghead.nets import Embedder, Generator, ProjectionDiscriminator
from talkinghead.speed import Speed
from talkinghead.nets.interface import (
    PersonDiscriminator,
    PersonEmbedder,
    PersonGenerator,
    check_model_config,
    missing_members,
)

TOY = [f"hydra.searchpath=[file://{Path(__file__).parent / 'configs'}]", "model=toy"]


@pytest.fixture(scope="module")
def toy_ckpt(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("toy") / "run"
    cfg = compose("meta_learn", [*QUIET, *TINY_SYNTHETIC_DATA, *TOY, "K=2", "iterations=3", f"run_dir={run_dir}"])
    run = build_meta_learning(cfg)
    run.trainer.num_sanity_val_steps = 0
    run.fit()
    return run_dir / "checkpoints" / "last.ckpt"


def test_the_paper_networks_meet_the_interface() -> None:
    g = Generator(32, 16, 8, 16, num_down=2, num_res=1, attn_res_down=None, attn_res_up=None)
    e = Embedder(32, 16, 8, 16, attn_res=None)
    assert isinstance(g, PersonGenerator) and isinstance(e, PersonEmbedder)
    assert missing_members(ProjectionDiscriminator(4, 32, 16, 8, 16, None), PersonDiscriminator) == []
    psi = g.eval().project(torch.randn(1, 16))[0]
    y = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ref = g(y, psi=psi)
        torch.testing.assert_close(g.inference_copy()(y, psi=psi), ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(g.folded(psi)(y), ref, atol=1e-5, rtol=0)


def test_the_toy_model_runs_every_stage(toy_ckpt, tmp_path) -> None:
    meta = load_meta_learned(toy_ckpt)
    assert isinstance(meta.generator, ToyGenerator), type(meta.generator)
    settings = FineTuneSettings.from_recipe(steps=2, batch_size=2, epochs=None)
    made = api.make_avatar("syn0005/v01", T=2, mode="FT", meta=meta, settings=settings, out_dir=tmp_path / "av",
                           preview_frames=4)
    avatar = load_avatar(made.path)
    assert avatar.psi.shape == (32,) and avatar.generator_delta, "ψ' of the toy's FiLM layer and its tuned weights"
    clip = api.drive(made.path, "syn0004/v00", tmp_path / "o.mp4", meta=meta, synthetic_frames=6, max_frames=6)
    assert clip.path.is_file() and clip.frames == 6

    pytest.importorskip("onnxruntime", reason="pip install -e '.[export]'")
    pytest.importorskip("onnxscript", reason="pip install -e '.[export]'")
    from talkinghead.inference.export import OnnxRenderer, export_avatar, probe_images  # needs the export extras

    exported = export_avatar(made.path, tmp_path / "toy.onnx", ckpt=toy_ckpt)
    y = probe_images(avatar, 3)
    want = AvatarRenderer(avatar, meta, speed=Speed.plain()).render(y)
    got = OnnxRenderer(exported.path).render(y)
    assert want.std() > 1e-3 and (got - want).abs().max() < 1e-4


def test_the_toy_model_is_evaluated(toy_ckpt, tmp_path) -> None:
    out = evaluate_main([f"ckpt={toy_ckpt}", "T_values=[1]", "num_targets=2", "finetune.steps=2",
                         "finetune.epochs=null", "max_videos=1", f"out_dir={tmp_path}", "logger=csv",
                         "progress=false"])
    rows = list(csv.DictReader(out.open()))
    assert [(r["T"], r["method"]) for r in rows] == [("1", "FT"), ("1", "FF")]
    assert all(0.0 < float(r["SSIM"]) <= 1.0 for r in rows)


def test_a_class_lacking_the_interface_is_one_line_naming_what_is_missing() -> None:
    cfg = compose("meta_learn", [*TOY, "model.generator._target_=torch.nn.Identity"])
    with pytest.raises(ConfigError) as e:
        check_model_config(cfg.model)
    msg = str(e.value)
    assert "\n" not in msg and "torch.nn.Identity lacks folded, inference_copy, project" in msg, msg
    with pytest.raises(ConfigError, match="lacks folded"):
        build_meta_learning(cfg)


def test_a_checkpoint_whose_config_calls_something_else_is_refused(toy_ckpt, tmp_path) -> None:
    marker = tmp_path / "ran"
    data = torch.load(toy_ckpt, map_location="cpu", weights_only=False)
    write = {"_target_": "shutil.copyfile", "src": str(toy_ckpt), "dst": str(marker)}  # not on Hydra's blocklist
    for node in (write, {"_target_": "toy_model.ToyGenerator", "image_size": 32, "emb_dim": 32, "channels": write}):
        data["hyper_parameters"]["config"]["model"]["generator"] = node
        crafted = tmp_path / "crafted.ckpt"
        torch.save(data, crafted)
        with pytest.raises((ConfigError, CheckpointError)) as e:
            load_meta_learned(crafted)
        assert "\n" not in str(e.value) and "model.generator" in str(e.value), e.value
        assert not marker.exists()
