"""The order of one iteration's updates (docs/paper.md row 66): G's first against D as it is, then D's on the same
fakes (FSTH's ``run_epoch``, the paper configs' ``optim.g_first``), or D's first (the embedded default)."""
from __future__ import annotations

import copy
import functools

import pytest
import torch
from torch.utils.data import DataLoader

from talkinghead.config import compose
from talkinghead.inference.fewshot import FineTuneSettings
from talkinghead.modules.meta_learning import sparse_adam_like, split_episode

from helpers import FixedEpisodes, tiny_module


@pytest.mark.parametrize("g_first", [True, False])
def test_g_first_updates_g_against_d_before_d_s_updates(g_first: bool) -> None:
    torch.manual_seed(0)
    module = tiny_module(num_videos=3, d_steps=2, pixel=0.0, match=0.0)
    module.g_first = g_first
    module.manual_backward = lambda loss, *a, **k: loss.backward()  # no Trainer here
    module.log_dict = lambda *a, **k: None
    D, table = module.discriminator, module.discriminator.w_table
    adam = functools.partial(torch.optim.Adam, lr=1e-2, betas=(0.0, 0.999))
    opts = (adam([*module.embedder.parameters(), *module.generator.parameters()]),
            adam([p for p in D.parameters() if p is not table]), sparse_adam_like(adam)([table]))
    module.d_optimizers = lambda: opts
    order: list[str] = []
    for name, tag in (("discriminator_step", "d"), ("generator_terms", "g")):
        method = getattr(module, name)
        setattr(module, name, lambda *a, _m=method, _t=tag, **k: (order.append(_t), _m(*a, **k))[1])
    batch = next(iter(DataLoader(FixedEpisodes(n=2, K=2), batch_size=2)))
    x_src, y_src, x, y = split_episode(batch)
    idx = batch["video_index"]
    x_hat = module.generator(y, module.embedder.embed(x_src, y_src))
    before = copy.deepcopy(D)
    logs = module.adversarial_update(x, y, x_hat, None, None, idx)
    assert order == (["g", "d", "d"] if g_first else ["d", "d", "g"])

    def adversarial(net) -> torch.Tensor:  # -D(x_hat) with the D given
        with torch.no_grad():
            scores, _ = net(x_hat.detach(), y, None, net.w_rows(idx) + net.w0)
        return -scores.mean()

    seen, other = (before, D) if g_first else (D, before)
    torch.testing.assert_close(logs["train/g_adversarial"], adversarial(seen), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(adversarial(seen), adversarial(other), rtol=1e-3), "D's steps changed nothing"


def test_the_paper_configs_update_g_first_and_the_embedded_default_d_first() -> None:
    for exp in ("vox2_paper", "vox1_paper", "vox2_paper_ff", "vox1_paper_ff"):
        assert compose("meta_learn", [f"experiment={exp}", "data.root=/x"]).optim.g_first is True
    assert compose("meta_learn", []).optim.g_first is False
    assert compose("finetune", ["id=x"]).g_first is True and FineTuneSettings.from_recipe().g_first is True
    assert FineTuneSettings.from_config({"g_first": False}).g_first is False
