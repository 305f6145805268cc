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
