"""Adversarial, feature-matching and match losses."""
from __future__ import annotations

import torch

from talkinghead.losses.adversarial import adversarial_loss, hinge_d_loss
from talkinghead.losses.feature_matching import feature_matching_loss
from talkinghead.losses.match import match_loss


def test_hinge_signs() -> None:
    confident = hinge_d_loss(torch.tensor([2.0, 1.5]), torch.tensor([-3.0, -1.0]))
    assert confident.item() == 0.0, "D that scores reals >= 1 and fakes <= -1 pays nothing"
    fooled = hinge_d_loss(torch.tensor([-1.0]), torch.tensor([1.0]))
    assert fooled.item() == 4.0
    # gradients push real scores up and fake scores down
    real = torch.tensor([0.0], requires_grad=True)
    fake = torch.tensor([0.0], requires_grad=True)
    hinge_d_loss(real, fake).backward()
    assert real.grad.item() < 0 < fake.grad.item()
    # the generator's term falls as D believes the fakes
    assert adversarial_loss(torch.tensor([2.0])) < adversarial_loss(torch.tensor([-2.0]))


def test_feature_matching_detaches_real() -> None:
    real = [torch.ones(2, 3, requires_grad=True)]
    fake = [torch.zeros(2, 3, requires_grad=True)]
    loss = feature_matching_loss(fake, real)
    assert loss.item() == 1.0
    loss.backward()
    assert real[0].grad is None and fake[0].grad is not None


def test_match_loss() -> None:
    w, e = torch.zeros(2, 4), torch.full((2, 4), 0.5)
    assert match_loss(w, e).item() == 0.5
    assert match_loss(e, e).item() == 0.0


def test_an_unknown_loss_term_is_one_line_with_the_closest_name_wherever_it_is_given() -> None:
    import pytest

    from talkinghead.config import compose
    from talkinghead.errors import ConfigError
    from talkinghead.inference.fewshot import FineTuneSettings
    from talkinghead.losses.terms import GENERATOR_TERMS, term_weights
    from talkinghead.training.train import check_config

    assert term_weights({"pixel": 2}) == {k: 2.0 if k == "pixel" else 0.0 for k in GENERATOR_TERMS}
    cfg = compose("meta_learn", ["+loss.weights.feature_matchng=3"])
    for call, where in ((lambda: check_config(cfg), "loss.weights"),
                        (lambda: FineTuneSettings.from_recipe(loss_weights={"feature_matchng": 3}), "loss_weights")):
        with pytest.raises(ConfigError) as e:
            call()
        assert str(e.value) == f"unknown loss term {where}.feature_matchng: did you mean feature_matching?"
    with pytest.raises(ConfigError, match="unknown loss term loss.weights.zzz: known: content_vgg19, "):
        term_weights({"zzz": 1})
