"""The fast path (talkinghead.speed) against the plain one, spectral norm once per step, and make bench."""
from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from talkinghead.config import compose
from talkinghead.errors import ConfigError
from talkinghead.nets import Generator
from talkinghead.nets.layers import ResBlockDown, ResBlockUp
from talkinghead.nets.spectral import SpectralNorm, bake, power_iteration, spectral_norm, spectral_norms
from talkinghead.speed import Speed, to_memory_format
from talkinghead.training.build import build_module

REPO = Path(__file__).resolve().parents[1]
LOSSES = ("train/d_hinge", "train/w_e_dist", "train/g_pixel", "train/g_adversarial", "train/g_feature_matching",
          "train/g_match", "train/g_total")


class OneEpisode(torch.utils.data.Dataset):
    """The same smooth random episodes every run (B of them), as the embedded config shapes them."""

    def __init__(self, n: int, K: int, size: int) -> None:
        g = torch.Generator().manual_seed(1)
        low = torch.rand(n * 2 * (K + 1), 3, 8, 8, generator=g) * 2 - 1
        imgs = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        self.frames, self.lms = imgs.view(2, n, K + 1, 3, size, size)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"frames": self.frames[i], "landmark_images": self.lms[i], "video_index": torch.tensor(i)}


def one_iteration(speed: Speed, device: str = "cpu", batch: int = 4) -> tuple[dict[str, float], pl.LightningModule]:
    """One meta-learning iteration of the embedded experiment's real config on ``speed``; its logged losses."""
    cfg = compose("meta_learn", ["experiment=embedded", "logger=csv", "optim.d_steps_per_g=1"])
    pl.seed_everything(0, verbose=False)
    module = build_module(cfg, num_videos=batch, speed=speed)
    data = OneEpisode(batch, int(cfg.K), int(cfg.model.image_size))
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu", devices=1, precision=speed.precision, max_steps=2,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0,
    )
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=batch))
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k in LOSSES}, module


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_fast_path_changes_one_steps_losses_only_within_bf16_tolerance(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    # bf16 autocast forced on, so the mixed-precision code runs on any CPU (auto picks it only where native)
    fast = replace(Speed(), precision="bf16-mixed", compile=False).resolve(device)
    plain_losses, _ = one_iteration(Speed.plain(), device)
    fast_losses, module = one_iteration(fast, device)
    # the fast run really was the fast path
    conv = module.generator.down[0].conv1
    assert conv.parametrizations.weight.original.is_contiguous(memory_format=torch.channels_last)
    assert module.trainer.precision == "bf16-mixed"
    assert module.optimizers()[0].optimizer.defaults["fused"] is True
    assert set(plain_losses) == set(LOSSES) == set(fast_losses)
    for k in LOSSES:
        p, f = plain_losses[k], fast_losses[k]
        assert math.isfinite(f)
        # bf16 keeps 8 bits of mantissa (relative step 2^-8 = 0.4%); over ~20 layers and one optimiser step the
        # terms moved by < 0.1% here, the adversarial score (a mean of signed scores near 0) by 0.003 absolute
        assert f == pytest.approx(p, rel=2e-2, abs=1e-2), (k, p, f)


def test_every_loss_term_is_computed_in_fp32_under_autocast() -> None:
    """The logged values are cast to fp32 by Lightning anyway: check the terms' own dtype."""
    from talkinghead.losses.adversarial import adversarial_loss, hinge_d_loss
    from talkinghead.losses.content import feature_l1
    from talkinghead.losses.feature_matching import feature_matching_loss
    from talkinghead.losses.match import match_loss
    from talkinghead.losses.pixel import pixel_loss

    a, b = torch.rand(4, 8, dtype=torch.bfloat16), torch.rand(4, 8, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = [hinge_d_loss(a[:, 0], b[:, 0]), adversarial_loss(a[:, 0]), feature_matching_loss([a], [b]),
                 match_loss(a, b), pixel_loss(a, b), feature_l1([a], [b])]
    assert all(t.dtype == torch.float32 for t in terms), [t.dtype for t in terms]


@pytest.mark.gpu
def test_no_host_device_synchronisation_inside_a_training_step() -> None:
    """CUDA's sync debug mode around the steps after the first two (which set up cuDNN, the allocator, Adam)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")

    class SyncWatch(pl.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            if batch_idx >= 2:
                torch.cuda.set_sync_debug_mode("error")

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            torch.cuda.set_sync_debug_mode("default")

    cfg = compose("meta_learn", ["experiment=embedded", "logger=csv"])
    speed = replace(Speed(), compile=False).resolve("cuda")
    module = build_module(cfg, num_videos=4, speed=speed)
    trainer = pl.Trainer(accelerator="gpu", devices=1, precision=speed.precision, max_steps=5 * 2, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=[SyncWatch()])
    data = OneEpisode(4, int(cfg.K), int(cfg.model.image_size))
    try:  # a synchronising call inside a step raises RuntimeError
        trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=4, pin_memory=True))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert module.iteration == 5


def test_fast_path_without_autocast_matches_the_plain_path_closely() -> None:
    """channels-last and fused Adam alone change only the order of floating-point sums."""
    fast = replace(Speed(), precision="32-true", compile=False).resolve("cpu")
    plain_losses, _ = one_iteration(Speed.plain())
    fast_losses, _ = one_iteration(fast)
    for k in LOSSES:
        assert fast_losses[k] == pytest.approx(plain_losses[k], rel=1e-3, abs=1e-5), k


def test_one_step_losses_depend_on_the_data_so_the_comparison_can_fail() -> None:
    a, _ = one_iteration(Speed.plain(), batch=4)
    b, _ = one_iteration(Speed.plain(), batch=2)
    assert any(a[k] != pytest.approx(b[k], rel=2e-2, abs=1e-2) for k in LOSSES)


# ------------------------------------------------------------------------------------------------ settings
def test_speed_configs_compose_and_resolve() -> None:
    fast = Speed.from_config(dict(compose("meta_learn", ["experiment=embedded"]).speed))
    plain = Speed.from_config(dict(compose("meta_learn", ["experiment=embedded", "speed=plain"]).speed))
    assert plain == Speed.plain()
    cpu = fast.resolve("cpu")
    assert cpu.compile is False and cpu.precision in ("bf16-mixed", "32-true")
    assert fast.resolve("cuda", long_run=False).compile is False
    assert plain.optimizer_kwargs() == {"foreach": False, "fused": False}
    assert fast.optimizer_kwargs() == {"fused": True}


@pytest.mark.parametrize("native, expected", [("1", "bf16-mixed"), ("0", "32-true")])
def test_precision_auto_follows_the_cpu_and_can_be_forced_either_way(monkeypatch, native, expected) -> None:
    from talkinghead.errors import ConfigError
    from talkinghead.speed import NATIVE_BF16_ENV

    monkeypatch.setenv(NATIVE_BF16_ENV, native)
    assert Speed().resolve("cpu").precision == expected
    assert Speed(precision="32-true").resolve("cpu").precision == "32-true"  # an explicit value is never changed
    monkeypatch.setenv(NATIVE_BF16_ENV, "yes")
    with pytest.raises(ConfigError, match="must be 1 or 0"):
        Speed().resolve("cpu")


def test_compile_auto_is_for_single_process_cuda_meta_learning() -> None:
    from talkinghead.training.build import resolve_speed

    def resolved(*overrides: str) -> Speed:
        return resolve_speed(compose("meta_learn", ["experiment=vox2_paper", "data=synthetic", *overrides]))

    assert resolved("trainer=gpu").compile is True  # resolved from the config: no GPU needed to decide
    assert resolved("trainer=ddp").compile is False
    assert resolved("trainer=ddp", "speed.compile=true").compile is True
    assert resolved("trainer=cpu").compile is False
    Speed.plain().apply_process()  # resolve_speed set process-wide switches: leave the defaults to other tests


@pytest.mark.parametrize("bad, match", [({"precison": "auto"}, "unknown speed setting"),
                                        ({"precision": "bf16"}, "speed.precision"),
                                        ({"optimizer": "fast"}, "speed.optimizer"),
                                        ({"compile": "yes"}, "speed.compile")])
def test_bad_speed_settings_are_one_line_errors(bad: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Speed.from_config(bad)


def test_episode_layout_is_channels_last_per_frame_and_keeps_values() -> None:
    t = torch.rand(2, 5, 3, 16, 16)
    cl = to_memory_format(t, torch.channels_last)
    assert torch.equal(cl, t)
    assert cl.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    assert cl[:, 4][1].permute(1, 2, 0).is_contiguous()  # each target image is HWC in memory
    # the K sources: their (B*K) view is a copy, which the module makes channels-last (a reshape would be NCHW)
    from helpers import tiny_module

    module = tiny_module(num_videos=2, size=16)
    module.channels_last = True
    x_src, y_src, _, _ = module.sources({"frames": cl, "landmark_images": cl})
    assert x_src.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x_src, t[:, :4])


# ------------------------------------------------------------------------------------------------ spectral norm
def test_sigma_converges_to_the_top_singular_value() -> None:
    torch.manual_seed(0)  # 50 iterations fall short of 1e-3 for ~1 random 8x72 matrix in 40 (a close 2nd value)
    conv = spectral_norm(nn.Conv2d(8, 16, 3))
    w = conv.parametrizations.weight.original.detach()
    (sn,) = [p for _, p in spectral_norms(conv)]
    for _ in range(50):
        power_iteration(conv)
    top = torch.linalg.matrix_norm(w.flatten(1), ord=2)
    assert torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2) == pytest.approx(1.0, abs=1e-3)
    assert torch.dot(sn._u, w.flatten(1) @ sn._v) == pytest.approx(float(top), rel=1e-3)


def test_forward_does_no_power_iteration_and_training_does_one_per_optimiser_step(monkeypatch) -> None:
    from helpers import FixedEpisodes, tiny_module

    module = tiny_module(num_videos=2, size=32, d_steps=2)
    g = module.generator
    u_before = [p._u.clone() for _, p in spectral_norms(g)]
    g.train()(torch.rand(2, 3, 32, 32), torch.rand(2, g.emb_dim))
    assert all(torch.equal(a, p._u) for a, (_, p) in zip(u_before, spectral_norms(g)))

    calls = {"E": 0, "G": 0, "D": 0}
    owner = {id(p): name for name, net in (("E", module.embedder), ("G", module.generator),
                                           ("D", module.discriminator)) for _, p in spectral_norms(net)}
    original = SpectralNorm.power_iteration

    def counting(self, weight, iterations=1):
        calls[owner[id(self)]] += 1
        return original(self, weight, iterations)

    monkeypatch.setattr(SpectralNorm, "power_iteration", counting)
    iterations = 3
    trainer = pl.Trainer(max_steps=iterations * 3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(module, torch.utils.data.DataLoader(FixedEpisodes(2, 2, 32), batch_size=2))
    layers = {name: len(list(spectral_norms(net))) for name, net in (("E", module.embedder),
                                                                     ("G", module.generator),
                                                                     ("D", module.discriminator))}
    assert calls == {"E": iterations * layers["E"], "G": iterations * layers["G"], "D": 2 * iterations * layers["D"]}


def test_state_dicts_of_torch_spectral_norm_load_unchanged() -> None:
    """Checkpoints written before this parametrisation (torch's spectral_norm) keep their keys and outputs."""
    from torch.nn.utils.parametrizations import spectral_norm as torch_sn

    torch.manual_seed(0)
    theirs = torch_sn(nn.Conv2d(4, 6, 3)).eval()
    ours = spectral_norm(nn.Conv2d(4, 6, 3)).eval()
    assert set(theirs.state_dict()) == set(ours.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.rand(2, 4, 9, 9)
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)


def test_baking_a_copy_keeps_outputs_and_leaves_the_original_parametrised() -> None:
    g = Generator(32, emb_dim=16, base_channels=8, max_channels=16, num_down=2, num_res=1, attn_res_down=16, attn_res_up=16).eval()
    y, e = torch.rand(2, 3, 32, 32), torch.rand(2, 16)
    before = g(y, e)
    baked = bake(copy.deepcopy(g))
    assert not list(spectral_norms(baked)) and list(spectral_norms(g))
    assert torch.allclose(baked(y, e), before, atol=1e-5)
    assert torch.equal(g(y, e), before)


def test_residual_skips_equal_the_papers_order_of_operations() -> None:
    """conv1x1 -> avgpool (down) and up2 -> conv1x1 (up) are computed the other way round: same result."""
    torch.manual_seed(0)
    down, x = ResBlockDown(4, 8), torch.rand(2, 4, 16, 16)
    main = down.conv2(F.relu(down.conv1(F.relu(x))))
    assert torch.allclose(down(x), F.avg_pool2d(main, 2) + F.avg_pool2d(down.skip(x), 2), atol=1e-5)
    up, p = ResBlockUp(8, 4), torch.rand(2, 2 * 8 + 2 * 4)
    p1, p2 = p.split([16, 8], dim=1)
    h = F.interpolate(F.relu(up.norm1(x.repeat(1, 2, 1, 1), p1)), scale_factor=2, mode="nearest")
    h = up.conv2(F.relu(up.norm2(up.conv1(h), p2)))
    skip = up.skip(F.interpolate(x.repeat(1, 2, 1, 1), scale_factor=2, mode="nearest"))
    assert torch.allclose(up(x.repeat(1, 2, 1, 1), p), h + skip, atol=1e-5)


# ------------------------------------------------------------------------------------------------ inference
def test_renderer_fast_path_matches_plain_within_bf16_tolerance() -> None:
    from talkinghead.inference.render import FrameRenderer

    torch.manual_seed(0)
    g = Generator(32, emb_dim=16, base_channels=8, max_channels=16, num_down=2, num_res=1, attn_res_down=16, attn_res_up=16)
    psi = g.eval().project(torch.rand(1, 16))[0].detach()
    y = torch.rand(5, 3, 32, 32) * 2 - 1
    plain = FrameRenderer(g, psi, "cpu", Speed.plain()).render(y, batch_size=2)
    fast = FrameRenderer(g, psi, "cpu", replace(Speed(), precision="bf16-mixed")).render(y, batch_size=2)
    reference = g(y, psi=psi).detach()
    assert torch.allclose(plain, reference, atol=1e-5)
    err = (fast - reference).abs()
    # bf16 rounding (0.4% per op) grows through the ~15 layers and the norms of this random net to ~2% of the
    # activations (0.010 mean, 0.093 max on a [-1, 1] image, measured): a bug (a wrong psi, a lost layer) is 10x that
    assert err.mean() < 0.02 and err.max() < 0.2 and not torch.equal(fast, reference), (err.mean(), err.max())


# ------------------------------------------------------------------------------------------------ make bench
@pytest.mark.slow
def test_make_bench_quick_writes_a_well_formed_json(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "talkinghead.tools.bench", "--quick", "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (path,) = tmp_path.glob("bench_*_quick.json")
    doc = json.loads(path.read_text())
    assert doc["quick"] is True and doc["machine"]["torch"] == torch.__version__
    rows = doc["rows"]
    assert {r["section"] for r in rows} == {"meta", "finetune", "reenact", "data"}
    for r in rows:
        assert set(r) == {"section", "name", "value", "unit", "note"} and r["unit"]
        assert r["value"] is None or (math.isfinite(r["value"]) and r["value"] > 0), r
    names = {r["name"] for r in rows}
    for needed in ("embedded default, 64², K=4: fast/plain speed-up", "embedded avatar 64²: fast, batch 1",
                   "landmark images, 256²"):
        assert needed in names
    assert any(r["unit"] == "ms/iter" and "paper 256²" in r["name"] for r in rows)
    assert str(path) in proc.stdout and "fast/plain speed-up" in proc.stdout


# ------------------------------------------------------------------------------------------------ resume
def test_fused_adam_needs_the_moments_in_the_weights_layout_and_match_state_layout_gives_it() -> None:
    from talkinghead.speed import match_state_layout

    torch.manual_seed(0)
    w0, grads = torch.randn(4, 3, 3, 3), [torch.randn(4, 3, 3, 3) for _ in range(2)]

    def two_steps(fused: bool, layout: torch.memory_format, state_layout: torch.memory_format, fix: bool):
        w = w0.clone().contiguous(memory_format=layout).requires_grad_()
        opt = torch.optim.Adam([w], lr=0.1, fused=fused, foreach=None if fused else False)
        for i, g in enumerate(grads):
            w.grad = g.contiguous(memory_format=layout)
            opt.step()
            if i == 0:  # as if loaded from a checkpoint written with the other layout
                for k in ("exp_avg", "exp_avg_sq"):
                    opt.state[w][k] = opt.state[w][k].contiguous(memory_format=state_layout)
                if fix:
                    assert match_state_layout(opt) == (2 if layout != state_layout else 0)
        return w.detach()

    cl, nchw = torch.channels_last, torch.contiguous_format
    reference = two_steps(False, nchw, nchw, False)
    assert torch.allclose(two_steps(True, cl, nchw, True), reference, atol=1e-6)
    assert not torch.allclose(two_steps(True, cl, nchw, False), reference, atol=1e-3)  # silently wrong


def test_a_checkpoint_resumes_on_the_other_path_with_that_paths_adam_and_layout(tmp_path: Path, monkeypatch) -> None:
    cfg = compose("meta_learn", ["experiment=embedded", "logger=csv", "optim.d_steps_per_g=1"])
    data = torch.utils.data.DataLoader(OneEpisode(2, int(cfg.K), int(cfg.model.image_size)), batch_size=2)

    def fit(speed: Speed, iterations: int, ckpt: Path | None = None) -> pl.LightningModule:
        pl.seed_everything(0, verbose=False)
        module = build_module(cfg, num_videos=2, speed=speed)
        trainer = pl.Trainer(accelerator="cpu", precision="32-true", max_steps=2 * iterations, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             limit_val_batches=0, num_sanity_val_steps=0)
        trainer.fit(module, data, ckpt_path=ckpt)
        if ckpt is None:
            trainer.save_checkpoint(tmp_path / f"{speed.optimizer}.ckpt")
        return module

    def layouts_match(module: pl.LightningModule) -> bool:
        return all(v.stride() == p.stride() for opt in module.trainer.optimizers for p, st in opt.state.items()
                   for v in st.values() if torch.is_tensor(v) and v.shape == p.shape and p.dim() == 4)

    def adam(module: pl.LightningModule) -> set[tuple]:
        return {(g["fused"], g["foreach"]) for opt in module.trainer.optimizers for g in opt.param_groups
                if not isinstance(opt, torch.optim.SparseAdam)}  # W's rows: SparseAdam has one implementation

    fast = replace(Speed(), precision="32-true", compile=False)  # layout + fused Adam, no bf16 noise
    fit(Speed.plain(), 1)
    resumed = fit(fast, 2, tmp_path / "for-loop.ckpt")
    assert layouts_match(resumed) and adam(resumed) == {(True, None)}
    fit(fast, 1)
    assert adam(fit(Speed.plain(), 2, tmp_path / "fused.ckpt")) == {(False, False)}

    import talkinghead.modules.meta_learning as ml

    monkeypatch.setattr(ml, "match_state_layout", lambda optimizer: 0)  # without it: for-loop Adam, wrong layout
    unmatched = fit(fast, 2, tmp_path / "for-loop.ckpt")
    assert not layouts_match(unmatched) and adam(unmatched) == {(False, False)}
