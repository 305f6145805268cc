"""D's W table: sparse rows with a lazy optimiser, its relation to dense Adam, the fake half's detached W_i."""
from __future__ import annotations

import functools

import pytest
import torch
from torch.utils.data import DataLoader

from talkinghead.losses.feature_matching import feature_matching_loss
from talkinghead.modules import meta_learning
from talkinghead.modules.meta_learning import sparse_adam_like
from talkinghead.nets import ProjectionDiscriminator

from helpers import FixedEpisodes, tiny_module

ADAM = functools.partial(torch.optim.Adam, lr=1e-2, betas=(0.0, 0.999), eps=1e-5)  # the paper config's betas
# SparseAdam adds eps to sqrt(v) before the bias correction, dense Adam after it, so SparseAdam is dense Adam with
# eps / sqrt(1 - beta2^t) (ledger row 62 (a); test_sparse_adam_is_dense_adam_with_eps_over_the_bias_correction):
# elsewhere they are compared with an eps too small to matter.
ADAM_NO_EPS = functools.partial(torch.optim.Adam, lr=1e-2, betas=(0.0, 0.999), eps=1e-12)


def _step(table: torch.nn.Parameter, opt: torch.optim.Optimizer, idx: torch.Tensor, g: torch.Tensor,
          lookup) -> None:
    opt.zero_grad(set_to_none=True)
    (lookup(idx) * g).sum().backward()
    opt.step()


def _pair(rows: int = 6, dim: int = 4):
    torch.manual_seed(0)
    init = torch.rand(rows, dim)
    sparse = torch.nn.Embedding(rows, dim, sparse=True)
    dense = torch.nn.Embedding(rows, dim)
    with torch.no_grad():
        sparse.weight.copy_(init)
        dense.weight.copy_(init)
    return sparse, dense, sparse_adam_like(ADAM_NO_EPS)([sparse.weight]), ADAM_NO_EPS([dense.weight])


def test_the_W_update_touches_only_the_batch_rows_and_their_optimiser_state() -> None:
    D = ProjectionDiscriminator(50, 16, 8, 8, 8, None)
    assert D.sparse_w
    opt = sparse_adam_like(ADAM)([D.w_table])
    before = D.w_table.detach().clone()
    idx = torch.tensor([3, 17, 17, 40])
    (D.w_rows(idx) * torch.rand(4, 8)).sum().backward()
    assert D.w_table.grad.is_sparse, "W's gradient is dense"
    assert set(D.w_table.grad.coalesce().indices()[0].tolist()) == {3, 17, 40}
    opt.step()
    moved = (D.w_table.detach() != before).any(dim=1).nonzero().flatten().tolist()
    assert moved == [3, 17, 40]
    state = opt.state[D.w_table]
    for key in ("exp_avg", "exp_avg_sq"):
        touched = (state[key] != 0).any(dim=1).nonzero().flatten().tolist()
        assert touched == [3, 17, 40], f"{key} changed rows {touched}"


def test_sparse_W_equals_dense_adam_when_every_row_is_in_every_batch() -> None:
    sparse, dense, opt_s, opt_d = _pair()
    torch.manual_seed(1)
    for _ in range(5):
        idx, g = torch.randperm(6), torch.randn(6, 4)
        _step(sparse.weight, opt_s, idx, g, sparse)
        _step(dense.weight, opt_d, idx, g, dense)
    torch.testing.assert_close(sparse.weight, dense.weight, rtol=0, atol=1e-6)


def test_sparse_adam_is_dense_adam_with_eps_over_the_bias_correction() -> None:
    """Ledger row 62 (a): with gradients near eps (where eps matters), SparseAdam(eps) takes dense Adam's steps
    with eps / sqrt(1 - beta2^t) at step t, not eps * sqrt(1 - beta2^t)."""
    eps, b2 = 1e-5, 0.999
    torch.manual_seed(3)
    grads = [1e-5 * torch.randn(6, 4) for _ in range(5)]

    def run(scale) -> tuple[torch.Tensor, torch.Tensor]:
        sparse, dense, _, _ = _pair()
        opt_s = sparse_adam_like(ADAM)([sparse.weight])
        opt_d = ADAM([dense.weight])
        for t, g in enumerate(grads, start=1):
            opt_d.param_groups[0]["eps"] = scale(eps, 1 - b2 ** t)
            _step(sparse.weight, opt_s, torch.arange(6), g, sparse)
            _step(dense.weight, opt_d, torch.arange(6), g, dense)
        return sparse.weight.detach(), dense.weight.detach()

    s, d = run(lambda e, bc: e / bc ** 0.5)
    torch.testing.assert_close(s, d, rtol=0, atol=1e-7)
    s, d = run(lambda e, bc: e * bc ** 0.5)
    assert (s - d).abs().max() > 1e-3, "eps * sqrt(1 - beta2^t) would give SparseAdam's steps too"


def test_sparse_W_equals_dense_adam_at_a_row_s_first_touch_and_differs_only_by_v_s_decay_after() -> None:
    """The ledger's relation (beta1 = 0): a row's first update is dense Adam's; later, dense Adam's second moment
    has also decayed by beta2 on every step the row was not in the batch, SparseAdam's has not."""
    sparse, dense, opt_s, opt_d = _pair()
    torch.manual_seed(2)
    seq = [torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]), torch.tensor([0, 1])]
    grads = [torch.randn(2, 4) for _ in seq]
    for t, (idx, g) in enumerate(zip(seq, grads)):
        _step(sparse.weight, opt_s, idx, g, sparse)
        _step(dense.weight, opt_d, idx, g, dense)
        if t == 2:  # every row touched once: identical so far (untouched rows: beta1 = 0, m = 0, no move)
            torch.testing.assert_close(sparse.weight, dense.weight, rtol=0, atol=1e-6)
    vs, vd = opt_s.state[sparse.weight]["exp_avg_sq"], opt_d.state[dense.weight]["exp_avg_sq"]
    b2 = 0.999
    g0, g3 = grads[0], grads[3]
    torch.testing.assert_close(vs[:2], b2 * (1 - b2) * g0 ** 2 + (1 - b2) * g3 ** 2)        # decayed once
    torch.testing.assert_close(vd[:2], b2 ** 3 * (1 - b2) * g0 ** 2 + (1 - b2) * g3 ** 2)   # decayed 3 steps
    assert not torch.allclose(sparse.weight[:2], dense.weight[:2], rtol=0, atol=1e-7)
    torch.testing.assert_close(sparse.weight[2:], dense.weight[2:], rtol=0, atol=1e-6)


def test_meta_learning_steps_W_with_sparse_adam_and_keeps_the_step_count() -> None:
    import pytorch_lightning as pl

    pl.seed_everything(0, verbose=False)
    module = tiny_module(num_videos=40, match=10.0)
    data = FixedEpisodes(n=2, K=2)
    table = module.discriminator.w_table
    before = table.detach().clone()
    pl.Trainer(accelerator="cpu", max_steps=3 * 2, logger=False, enable_checkpointing=False, precision="32-true",
               enable_progress_bar=False, enable_model_summary=False).fit(module, DataLoader(data, batch_size=2))
    assert module.iteration == 3
    opts = module.trainer.optimizers
    assert len(opts) == 3 and isinstance(opts[2], torch.optim.SparseAdam)
    assert all(p is not table for o in opts[:2] for g in o.param_groups for p in g["params"])
    moved = (table.detach() != before).any(dim=1).nonzero().flatten().tolist()
    assert moved == [0, 1], f"rows {moved} moved; the batches hold videos 0 and 1"


def test_the_fake_half_of_the_hinge_gives_W_no_gradient() -> None:
    torch.manual_seed(0)
    module = tiny_module(num_videos=3)
    module.manual_backward = lambda loss, *a, **k: loss.backward()  # no Trainer here
    batch = next(iter(DataLoader(FixedEpisodes(n=2, K=2), batch_size=2)))
    _, _, x, y = meta_learning.split_episode(batch)
    x_hat = torch.rand_like(x) * 2 - 1
    idx = batch["video_index"]
    D = module.discriminator
    opt = torch.optim.SGD([p for p in D.parameters() if p is not D.w_table], lr=0.0)

    def w_grad(fake: torch.Tensor, from_fakes: bool) -> torch.Tensor:
        module.w_from_fakes = from_fakes
        D.zero_grad(set_to_none=True)
        module.discriminator_step(opt, x, y, fake, idx)
        return D.w_table.grad.to_dense().clone()

    # the hinge's fake half reaches W only through W_i: another x_hat changes W's gradient only when it may
    assert torch.equal(w_grad(x_hat, False), w_grad(-x_hat, False)), "W learnt from the fakes"
    assert not torch.equal(w_grad(x_hat, True), w_grad(-x_hat, True)), "the switch w_from_fakes does nothing"


def test_feature_matching_is_the_mean_over_blocks() -> None:
    real = [torch.zeros(2, 3), torch.zeros(2, 5), torch.zeros(1, 4)]
    fake = [torch.full((2, 3), 1.0), torch.full((2, 5), 2.0), torch.full((1, 4), 6.0)]
    assert feature_matching_loss(fake, real).item() == pytest.approx(3.0)  # (1 + 2 + 6) / 3, not their sum 9


def test_unknown_w_norm_is_refused() -> None:
    with pytest.raises(ValueError, match="w_norm"):
        ProjectionDiscriminator(3, 16, 8, 8, 8, None, w_norm="rows")
