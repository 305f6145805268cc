"""Networks: shapes at 64/128/256, spectral norm everywhere, AdaIN bookkeeping, the projection formula."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from talkinghead.nets import Embedder, Generator, ProjectionDiscriminator
from talkinghead.nets.layers import AdaIN, is_spectral_normed

SMALL = dict(emb_dim=64, base_channels=8, max_channels=32)


def small_nets(size: int, num_videos: int = 5):
    num_down = {64: 3, 128: 3, 256: 4}[size]
    return (
        Embedder(size, **SMALL),
        Generator(size, num_down=num_down, num_res=2, **SMALL),
        ProjectionDiscriminator(num_videos, size, **SMALL),
    )


@pytest.mark.parametrize("size", [64, 128, 256])
def test_shapes(size: int) -> None:
    torch.manual_seed(0)
    E, G, D = small_nets(size)
    x = torch.rand(2, 3, 3, size, size) * 2 - 1
    y = torch.rand(2, 3, 3, size, size) * 2 - 1
    e = E.embed(x, y)
    assert e.shape == (2, SMALL["emb_dim"])
    assert (e >= 0).all(), "E ends with a ReLU"
    out = G(y[:, 0], e)
    assert out.shape == (2, 3, size, size)
    assert out.abs().max() <= 1.0
    score, feats = D(out, y[:, 0], torch.tensor([0, 4]))
    assert score.shape == (2,)
    assert feats[-1].shape[-1] == 4 and len(feats) >= 3


def test_paper_model_shapes_256() -> None:
    """The paper's widths (64..512 channels, 512-d embeddings) at 256²; one sample to keep it quick."""
    E, G, D = Embedder(256), Generator(256), ProjectionDiscriminator(3, 256)
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        e = E(x, x)
        assert e.shape == (1, 512)
        assert G(x, e).shape == (1, 3, 256, 256)
        assert D(x, x, torch.tensor([2]))[0].shape == (1,)
    assert [m.trunk.out_channels for m in (E, D)] == [512, 512]


@pytest.mark.parametrize("net_index", [0, 1, 2])
def test_spectral_norm_on_every_weight_layer(net_index: int) -> None:
    net = small_nets(64)[net_index]
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers, "no weight layers found"
    missing = [type(m).__name__ for m in layers if not is_spectral_normed(m)]
    assert not missing, f"{len(missing)} weight layers without spectral norm"
    # and the normalised weight really has spectral norm ~1 after a few power iterations
    conv = layers[0]
    net.train()
    for _ in range(30):
        conv.weight  # noqa: B018 - each access in train mode runs one power iteration
    sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
    assert sigma == pytest.approx(1.0, abs=0.05)


def test_adain_parameter_count_equals_rows_of_P() -> None:
    G = Generator(64, num_down=3, num_res=2, **SMALL)
    adains = [m for m in G.modules() if isinstance(m, AdaIN)]
    assert sum(a.num_params for a in adains) == G.num_adain_params
    assert G.P.weight.shape == (G.num_adain_params, SMALL["emb_dim"])


def test_generator_depends_on_embedding_and_psi_path_matches() -> None:
    torch.manual_seed(0)
    G = Generator(64, num_down=3, num_res=2, **SMALL).eval()
    y = torch.rand(1, 3, 64, 64) * 2 - 1
    e1, e2 = torch.rand(1, 64) * 4, torch.rand(1, 64) * 4
    with torch.no_grad():
        a, b = G(y, e1), G(y, e2)
        assert (a - b).abs().mean() > 1e-3, "G ignores e_hat"
        assert torch.allclose(G(y, psi=G.project(e1)[0]), a, atol=1e-6)


def test_projection_output_equals_formula() -> None:
    torch.manual_seed(0)
    D = ProjectionDiscriminator(7, 64, **SMALL).eval()
    with torch.no_grad():
        D.w0_b.parametrizations.weight.original.normal_()
        D.b.fill_(0.37)
        D.w_table.normal_()
    x, y = torch.rand(3, 3, 64, 64), torch.rand(3, 3, 64, 64)
    idx = torch.tensor([0, 6, 3])
    with torch.no_grad():
        score, _ = D(x, y, idx)
        v, _ = D.features(x, y)
        by_hand = torch.stack([v[n] @ (D.W.weight[idx[n]] + D.w0) + D.b[0] for n in range(3)])
        assert torch.allclose(score, by_hand, atol=1e-5)
        w = D.W.weight[2] + D.w0
        assert torch.allclose(D(x, y, w=w)[0], v @ w + D.b, atol=1e-5)


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="power of two"):
        Embedder(100)
    with pytest.raises(ValueError, match="num_videos"):
        ProjectionDiscriminator(0, 64)


# ------------------------------------------------------------------ layout-preserving norm and up-sampling
@pytest.mark.parametrize("channels_last", [False, True])
def test_instance_norm_matches_torch_and_keeps_the_memory_format(channels_last: bool) -> None:
    from talkinghead.nets.layers import InstanceNorm

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.randn(3, 8, 10, 12) * 4 + 30).contiguous(memory_format=fmt)  # a large mean: cancellation is exercised
    ref = nn.InstanceNorm2d(8, affine=True)
    nn.init.uniform_(ref.weight, 0.5, 2.0)
    nn.init.normal_(ref.bias)
    mine = InstanceNorm(8)
    mine.load_state_dict(ref.state_dict())  # same parameter names: checkpoints of nn.InstanceNorm2d load
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, want = mine(xa), ref(xb)
    assert out.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(out, want, atol=2e-5, rtol=1e-5)
    g = torch.randn_like(want)
    (out * g).sum().backward()
    (want * g).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(mine.weight.grad, ref.weight.grad, atol=1e-4, rtol=1e-4)


def test_adain_in_bf16_normalises_in_fp32() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8) * 3 + 100  # bf16 keeps 3 significant digits: 100 +- 3 must not cancel in bf16
    params = torch.randn(2, 8) * 0.1
    want = AdaIN(4)(x.bfloat16().float(), params)
    got = AdaIN(4)(x.bfloat16(), params.bfloat16())
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() < 0.05


@pytest.mark.parametrize("channels_last", [False, True])
def test_up2_is_nearest_upsampling(channels_last: bool) -> None:
    import torch.nn.functional as F

    from talkinghead.nets.layers import up2

    x = torch.randn(2, 5, 3, 4)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = up2(x)
    assert torch.equal(out, F.interpolate(x, scale_factor=2, mode="nearest"))
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("channels_last", [False, True])
def test_up_conv_equals_conv_of_the_upsampled_input(channels_last: bool) -> None:
    from talkinghead.nets.layers import UpConv, up2

    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, padding=1)
    x = torch.randn(2, 6, 5, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = UpConv(conv)(x)
    torch.testing.assert_close(out, conv(up2(x)), atol=2e-6, rtol=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_the_renderer_runs_every_up_block_folded_and_matches_the_generator() -> None:
    from talkinghead.nets.layers import ResBlockUp
    from talkinghead.inference.render import FrameRenderer
    from talkinghead.speed import Speed

    torch.manual_seed(0)
    g = Generator(64, num_down=3, num_res=1, attn_res_down=16, attn_res_up=16, **SMALL).eval()
    psi = g.project(torch.rand(1, SMALL["emb_dim"]))[0].detach()
    renderer = FrameRenderer(g, psi, "cpu", Speed(precision="32-true"))  # exactness: never bf16, whatever the CPU
    ups = [m for m in renderer.generator.modules() if isinstance(m, ResBlockUp)]
    assert len(ups) == 3 and all(m.up_conv1 is not None for m in ups)
    assert all(m.up_conv1 is None for m in g.modules() if isinstance(m, ResBlockUp)), "the model is left as it was"
    y = torch.rand(3, 3, 64, 64) * 2 - 1
    torch.testing.assert_close(renderer.render(y), g(y, psi=psi).detach(), atol=1e-4, rtol=0)  # a wrong phase: ~0.1


# ------------------------------------------------------------------ the embedder's final pooling order
def test_embedder_pool_orders_differ_where_the_last_map_has_negatives_and_the_default_is_unchanged() -> None:
    """sum_relu (the default, this code's order from the start) is ReLU(sum over space); relu_sum (FSTH's
    embedders/FSTH.py) is sum over space of ReLU: larger wherever a channel's map has negative entries."""
    torch.manual_seed(0)
    default = Embedder(64, **SMALL)
    fsth = Embedder(64, pool="relu_sum", **SMALL)
    fsth.load_state_dict(default.state_dict())  # the order has no parameters: every checkpoint loads into both
    assert default.pool == "sum_relu"
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    h = default.trunk(torch.cat([x, y], dim=1))[-1]  # (2, emb, 4, 4): the map that is pooled
    assert (h < 0).any() and (h > 0).any(), "the test needs a last map with both signs"
    e_default, e_fsth = default(x, y), fsth(x, y)
    assert torch.equal(e_default, torch.relu(h.sum(dim=(2, 3)))), "the default order changed"
    assert torch.equal(e_fsth, torch.relu(h).sum(dim=(2, 3)))
    assert (e_fsth >= e_default - 1e-5).all(), "sum of ReLU is never below ReLU of the sum"
    mixed = ((h < 0).flatten(2).any(2)) & ((h > 0).flatten(2).any(2))  # channels whose map has both signs
    assert mixed.any() and (e_fsth[mixed] > e_default[mixed] + 1e-6).all()


def test_embedder_pool_reaches_the_network_from_config_and_a_config_without_it_keeps_the_old_order() -> None:
    from omegaconf import OmegaConf

    from talkinghead.training.build import build_networks
    from talkinghead.config import compose

    tiny = ["model.embedder.base_channels=8", "model.embedder.max_channels=32", "model.emb_dim=32"]
    for model in ("small", "paper"):
        assert compose("meta_learn", [f"model={model}"]).model.embedder.pool == "sum_relu", model
    cfg = compose("meta_learn", ["model.embedder.pool=relu_sum", *tiny]).model
    assert build_networks(cfg, 3)[0].pool == "relu_sum"
    old = OmegaConf.to_container(cfg, resolve=True)
    del old["embedder"]["pool"]  # a checkpoint's config from before the key existed
    assert build_networks(OmegaConf.create(old), 3)[0].pool == "sum_relu"


def test_embedder_pool_rejects_an_unknown_order_in_one_line() -> None:
    from talkinghead.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^model\.embedder\.pool='max': expected one of sum_relu, relu_sum$"):
        Embedder(64, pool="max", **SMALL)
