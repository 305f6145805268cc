"""The paper configuration follows the paper (and the authors' FSTH code where the paper is silent): network
sizes, where self-attention sits, the match term, W's parametrisation, the FF experiments, schedules in epochs."""
from __future__ import annotations

import copy

import pytest
import torch
from helpers import FixedEpisodes, tiny_module
from torch.utils.data import DataLoader

from talkinghead.training.build import build_networks
from talkinghead.config import compose
from talkinghead.losses.match import match_loss
from talkinghead.modules import adversarial, meta_learning
from talkinghead.nets.discriminator import num_videos_in_state
from talkinghead.nets.layers import ResBlockDown, ResBlockUp, SelfAttention
from talkinghead.nets.spectral import is_spectral_normed
from talkinghead.training.train import resolve_iterations


def count(module: torch.nn.Module, skip: str | None = None) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if not (skip and n.startswith(skip)))


@pytest.fixture(scope="module")
def paper_nets():
    torch.manual_seed(0)
    return build_networks(compose("meta_learn", ["model=paper"]).model, num_videos=3)


def test_paper_model_sizes_are_the_papers(paper_nets) -> None:
    """Paper Sec. 4 (and App.): E ~15M, G ~38M, D ~20M parameters (D without its W table)."""
    E, G, D = paper_nets
    for name, n, paper in (("E", count(E), 15e6), ("G", count(G), 38e6), ("D", count(D, skip="W."), 20e6)):
        assert abs(n - paper) / paper < 0.02, f"{name}: {n:,} parameters, the paper's {paper:,.0f}"
    # FSTH's decoder: the first up-sampling block keeps 512 channels, then 256, 128, 64
    ups = [b for b in G.up if isinstance(b, ResBlockUp)]
    assert [b.conv1.out_channels for b in ups] == [512, 256, 128, 64]


def test_generator_attends_at_32_in_the_encoder_and_64_in_the_decoder(paper_nets) -> None:
    _, G, _ = paper_nets
    seen: list[tuple[str, int]] = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, part=part: seen.append((part, out.shape[-1])))
        for part, blocks in (("down", G.down), ("up", G.up))
        for m in blocks
        if isinstance(m, SelfAttention)
    ]
    assert hooks, "no self-attention layer in G"
    with torch.no_grad():
        G.eval()(torch.zeros(1, 3, 256, 256), torch.rand(1, 512))
    for h in hooks:
        h.remove()
    assert seen == [("down", 32), ("up", 64)]


def test_embedder_and_discriminator_attend_at_32_and_feature_matching_reads_residual_blocks(paper_nets) -> None:
    E, _, D = paper_nets
    for net in (E, D):
        res, where = 256, []
        for block in net.trunk.blocks:
            res = res // 2 if isinstance(block, ResBlockDown) else res
            if isinstance(block, SelfAttention):
                where.append(res)
        assert where == [32]
    # D's features: after each of its 6 down-sampling blocks and its last residual block, not the attention's output
    blocks = [m for m in D.trunk.blocks if isinstance(m, ResBlockDown)]
    outs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda mod, inp, out: outs.append(out)) for b in blocks]
    hooks.append(D.last.register_forward_hook(lambda mod, inp, out: outs.append(out)))
    with torch.no_grad():
        _, feats = D.eval().features(torch.zeros(1, 3, 256, 256), torch.zeros(1, 3, 256, 256))
    for h in hooks:
        h.remove()
    assert len(feats) == 7 and all(f is o for f, o in zip(feats, outs))


def test_W_is_a_plain_sparse_table_and_w0_b_is_spectrally_normalised(paper_nets) -> None:
    _, _, D = paper_nets
    assert not is_spectral_normed(D.W) and is_spectral_normed(D.w0_b) and D.W.sparse
    raw = D.w_table
    assert raw.abs().max() <= 0.1 and raw.abs().max() > 0.05, "FSTH initialises W uniform in [-0.1, 0.1]"
    assert torch.equal(D.w_rows(torch.tensor([0, 2])), raw[[0, 2]])
    assert D.w0.shape == (512,) and D.b.shape == (1,)


def test_fsth_W_option_is_spectrally_normalised_as_one_matrix() -> None:
    from talkinghead.nets import ProjectionDiscriminator

    torch.manual_seed(0)
    D = ProjectionDiscriminator(5, 64, 512, 64, 512, 32, w_norm="spectral")
    assert is_spectral_normed(D.W) and is_spectral_normed(D.w0_b) and not D.sparse_w
    raw = D.W.parametrizations.weight.original
    assert raw is D.w_table and raw.abs().max() <= 0.1
    rows = D.w_rows(torch.tensor([0, 2]))
    assert torch.allclose(rows, D.W.weight[[0, 2]], atol=1e-6), "the rows D uses are those of W / sigma(W)"
    assert torch.linalg.matrix_norm(D.W.weight.detach(), ord=2) == pytest.approx(1.0, rel=0.05)
    assert D.w0.shape == (512,) and D.b.shape == (1,)


def test_old_checkpoint_layout_is_a_one_line_error() -> None:
    with pytest.raises(ValueError, match="earlier talkinghead") as info:
        num_videos_in_state({"discriminator.W.weight": torch.zeros(3, 4), "discriminator.w0": torch.zeros(4)})
    assert "\n" not in str(info.value)
    assert num_videos_in_state({"discriminator.W.parametrizations.weight.original": torch.zeros(5, 4)}) == 5
    assert num_videos_in_state({"discriminator.W.weight": torch.zeros(6, 4), "discriminator.w0_b.bias": 0}) == 6


def test_loading_an_old_checkpoint_says_why_in_one_line(tmp_path) -> None:
    from talkinghead.inference.avatar import CheckpointError, load_meta_learned

    old = {"hyper_parameters": {"config": {"model": {"image_size": 64, "generator": {"attn_res": 16}}}},
           "state_dict": {"discriminator.W.weight": torch.zeros(3, 4), "discriminator.w0": torch.zeros(4)}}
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match="earlier talkinghead.*meta-learn again") as info:
        load_meta_learned(tmp_path / "old.ckpt")
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------- the match term
def test_match_term_compares_per_frame_embeddings() -> None:
    w = torch.tensor([[0.0, 0.0]])
    e = torch.tensor([[[1.0, -1.0], [-1.0, 1.0]]])  # two frames whose mean is W exactly
    assert match_loss(w, e).item() == pytest.approx(1.0)
    assert match_loss(w, e.mean(dim=1)).item() == 0.0


def test_training_step_matches_each_frame_and_W_gets_no_gradient_from_it(monkeypatch) -> None:
    """G's update: L_MCH(E(x_k, y_k), W_i) reaches E but not W.  D's update: the hinge alone (no match term), so W's
    gradient there is the same with the match weight 10 or 0."""
    torch.manual_seed(0)
    module = tiny_module(num_videos=2, match=10.0)
    batch = next(iter(DataLoader(FixedEpisodes(n=2, K=3), batch_size=2)))
    x_src, y_src, x, y = meta_learning.split_episode(batch)
    idx = batch["video_index"]
    e_frames = module.embedder.embed_frames(x_src, y_src)
    assert e_frames.shape == (2, 3, 32)
    x_hat = module.generator(y, e_frames.mean(dim=1))
    terms = module.generator_terms(x, y, x_hat, e_frames, module.discriminator.w_rows(idx), idx)
    table = module.discriminator.w_table
    terms["match"].backward()
    assert table.grad is None, "the match term moved W"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.embedder.parameters())

    grads = []
    for weight in (10.0, 0.0):
        m = copy.deepcopy(module)
        m.zero_grad(set_to_none=True)
        m.loss_weights["match"] = weight
        m.manual_backward = lambda loss, *a, **k: loss.backward()  # no Trainer here
        opt = torch.optim.SGD(m.discriminator.parameters(), lr=0.0)
        logs = m.discriminator_step(opt, x, y, x_hat.detach(), idx)
        assert set(logs) == {"d_hinge", "d_real", "d_fake"}
        grads.append(m.discriminator.w_table.grad.to_dense().clone())
    assert torch.equal(grads[0], grads[1])


def test_short_meta_learning_brings_W_and_the_embeddings_together(monkeypatch) -> None:
    """A short run of the meta-learning module (tiny networks, 20 iterations): mean |W_i - e_hat_i| falls although
    W never moves with the match term (E is pulled to W); L_MCH is given the per-frame embeddings (B, K, d)."""
    import pytorch_lightning as pl

    shapes: list[tuple[int, ...]] = []
    real = adversarial.match_loss

    def spy(w, e):
        shapes.append(tuple(e.shape))
        return real(w, e)

    monkeypatch.setattr(adversarial, "match_loss", spy)  # G's terms, in the shared adversarial base
    pl.seed_everything(0, verbose=False)
    module = tiny_module(num_videos=2, match=10.0)
    data = FixedEpisodes(n=2, K=3)
    batch = next(iter(DataLoader(data, batch_size=2)))
    x_src, y_src, _, _ = meta_learning.split_episode(batch)

    def dist() -> float:
        with torch.no_grad():
            e_hat = module.embedder.embed(x_src, y_src)
            return (module.discriminator.w_rows(batch["video_index"]) - e_hat).abs().mean().item()

    before = dist()
    pl.Trainer(accelerator="cpu", max_steps=20 * 2, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False).fit(module, DataLoader(data, batch_size=2))
    after = dist()
    assert module.iteration == 20
    assert after < 0.7 * before, f"mean |W_i - e_hat_i| {before:.4f} -> {after:.4f}"
    assert len(shapes) == 20 and set(shapes) == {(2, 3, 32)}, shapes[:3]


# ----------------------------------------------------------------------------------------------- experiments
@pytest.mark.parametrize("n", [1, 2])
def test_ff_experiments_are_the_ft_ones_without_the_match_term_and_longer(n: int) -> None:
    ft = compose("meta_learn", [f"experiment=vox{n}_paper", "data.root=/x"])
    ff = compose("meta_learn", [f"experiment=vox{n}_paper_ff", "data.root=/x"])
    assert ff.name == f"vox{n}_paper_ff" and ff.loss.weights.match == 0.0 and ft.loss.weights.match == 0.01
    assert (ft.epochs, ff.epochs) == (75, 150)
    assert ff.model == ft.model and ff.data._target_ == ft.data._target_
    for other in ("content_vgg19", "content_vggface", "adversarial", "feature_matching"):
        assert ff.loss.weights[other] == ft.loss.weights[other]


def test_paper_experiments_use_fsth_adam_no_augmentation_and_epochs() -> None:
    cfg = compose("meta_learn", ["experiment=vox2_paper", "data.root=/x"])
    for opt in (cfg.optim.g, cfg.optim.d):
        assert list(opt.betas) == [0.0, 0.999] and opt.eps == 1e-5
    assert cfg.optim.d_steps_per_g == 2
    assert not cfg.data.augment, "the paper trains without flips, affine or colour changes"
    assert cfg.epochs == 75 and cfg.iterations is None
    assert (cfg.model.generator.attn_res_down, cfg.model.generator.attn_res_up) == (32, 64)


def test_epochs_count_passes_over_the_training_data() -> None:
    from hydra.utils import instantiate

    cfg = compose("meta_learn", ["epochs=2", "data.batch_size=8"])
    dm = instantiate(cfg.data)
    dm.setup("fit")
    batches = len(dm.train_dataloader())
    assert batches == 96 // 8, "one epoch: every training video once (32 identities x 3 videos)"
    assert resolve_iterations(cfg, dm) == 2 * batches
    assert resolve_iterations(compose("meta_learn", ["iterations=7"]), dm) == 7
