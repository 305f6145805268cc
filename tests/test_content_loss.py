"""L_CNT: random-initialised backbones written in the published layouts and loaded by the real code."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from _published_weights import write_published
from talkinghead.backbones.weights import MissingWeightsError
from talkinghead.losses.content import PAPER_WEIGHT_VGG19, PAPER_WEIGHT_VGGFACE, ContentLoss, content_loss


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("weights")
    write_published("vgg19", d, seed=3)
    write_published("vggface", d, seed=4)
    return d


@pytest.fixture(scope="module")
def loss(weights_dir: Path) -> ContentLoss:
    return ContentLoss(weights_dir=weights_dir)


def _face_like(batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1] ``(B, 3, size, size)``."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(batch, 3, size // 8, size // 8, generator=g) * 2 - 1
    return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(-1, 1)


def test_paper_defaults(loss: ContentLoss) -> None:
    assert (PAPER_WEIGHT_VGG19, PAPER_WEIGHT_VGGFACE) == (0.15, 0.025)
    assert (loss.weight_vgg19, loss.weight_vggface) == (0.15, 0.025)
    assert loss.vgg19_layers == (1, 6, 11, 20, 29) and loss.vggface_layers == (1, 6, 11, 18, 25)


def test_identical_images_give_zero(loss: ContentLoss) -> None:
    x = _face_like()
    total, terms = loss(x, x.clone())
    assert set(terms) == {"content_vgg19", "content_vggface"}
    assert float(total) < 1e-6 and all(float(v) < 1e-6 for v in terms.values())


def test_loss_grows_with_distortion(loss: ContentLoss) -> None:
    x = _face_like(seed=1)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    values = {"content_vgg19": [], "content_vggface": [], "total": []}
    with torch.no_grad():
        for sigma in (0.05, 0.1, 0.2, 0.4):
            total, terms = loss((x + sigma * noise).clamp(-1, 1), x)
            values["total"].append(float(total))
            for k, v in terms.items():
                values[k].append(float(v))
    for key, vals in values.items():
        assert vals[0] > 0 and all(a < b for a, b in zip(vals, vals[1:])), (key, vals)


def test_gradients_reach_the_fake_only(loss: ContentLoss) -> None:
    real = _face_like(seed=5)
    fake = _face_like(seed=6).requires_grad_(True)
    total, _ = loss(fake, real)
    total.backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in loss.parameters())
    loss.train()
    assert not loss.vgg19.training and not loss.vggface.training  # type: ignore[union-attr]


def test_checkpoint_does_not_carry_backbones(loss: ContentLoss) -> None:
    assert loss.state_dict() == {}
    assert sum(p.numel() for p in loss.parameters()) == 20_024_384 + 14_714_688  # held, just not saved
    loss.load_state_dict({}, strict=True)  # and a checkpoint without them loads strictly


def test_function_form_matches_module(loss: ContentLoss) -> None:
    x, y = _face_like(seed=7), _face_like(seed=8)
    total, terms = loss(x, y)
    total_f, terms_f = content_loss(x, y, loss.vgg19, loss.vggface)
    assert torch.allclose(total, total_f) and torch.allclose(terms["content_vgg19"], terms_f["content_vgg19"])
    only_face, t = content_loss(x, y, None, loss.vggface, weight_vgg19=0.0, weight_vggface=0.05)
    assert float(t["content_vgg19"]) == 0 and torch.allclose(only_face, 2 * terms["content_vggface"])
    with pytest.raises(ValueError, match="needs its backbone"):
        content_loss(x, y, None, loss.vggface)


def test_a_zero_weight_needs_no_file(weights_dir: Path, tmp_path: Path) -> None:
    only_vgg19 = tmp_path / "w"
    only_vgg19.mkdir()
    (only_vgg19 / "vgg19-dcbb9e9d.pth").symlink_to(weights_dir / "vgg19-dcbb9e9d.pth")
    with pytest.raises(MissingWeightsError,
                       match=r"vgg_face_dag\.pth.*make weights.*loss\.weights\.content_vggface=0"):
        ContentLoss(weights_dir=only_vgg19)
    partial = ContentLoss(weight_vggface=0.0, weights_dir=only_vgg19)
    assert partial.vggface is None
    x, y = _face_like(seed=9), _face_like(seed=10)
    total, terms = partial(x, y)
    assert float(terms["content_vggface"]) == 0 and float(total) == float(terms["content_vgg19"]) > 0


def test_bad_input_is_refused(loss: ContentLoss) -> None:
    with pytest.raises(ValueError, match="at least 32x32"):
        loss(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="one shape"):
        loss(torch.zeros(1, 3, 32, 32), torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        loss(torch.zeros(1, 1, 32, 32), torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match=">= 0"):
        ContentLoss(weight_vgg19=-1.0, weight_vggface=0.0)
