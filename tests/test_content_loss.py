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
    write_published("vgg19_caffe", d, seed=3)
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
    assert loss.vgg19 is not None and loss.vgg19.input_norm == "caffe" and loss.vgg19.pool == "avg"


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
    (only_vgg19 / "vgg19-d01eb7cb.pth").symlink_to(weights_dir / "vgg19-d01eb7cb.pth")
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


# ------------------------------------------------------------------------------ the paper's configuration
CAFFE_MEAN_BGR = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
VGGFACE_MEAN_RGB = torch.tensor([129.186279296875, 104.76238250732422, 93.59396362304688]).view(1, 3, 1, 1)


def _reference_l1(state: dict[str, torch.Tensor], fake: torch.Tensor, real: torch.Tensor, *, caffe_vgg19: bool,
                  relus: set[int]) -> torch.Tensor:
    """Σ_l mean|f_l(fake) − f_l(real)| written out by hand from a weight file's tensors: the input conversion
    (VGG19: BGR 0-255 minus the BGR mean; VGG-Face: RGB 0-255 minus its RGB mean), 3x3 convs, ReLUs and 2x2
    AVERAGE pools (FSTH), features at the sequence indices ``relus``."""
    if caffe_vgg19:
        names = [f"features.{i}" for i in (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)]
        pools_after = {"features.2", "features.7", "features.16", "features.25", "features.34"}
    else:  # conv1_1 < conv1_2 < conv2_1 < ... < conv5_3
        names = sorted(k[:-len(".weight")] for k in state if k.startswith("conv") and k.endswith(".weight"))
        pools_after = {"conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"}

    def feats(x: torch.Tensor) -> list[torch.Tensor]:
        x = (x + 1) / 2 * 255
        z = x.flip(1) - CAFFE_MEAN_BGR if caffe_vgg19 else x - VGGFACE_MEAN_RGB
        out, idx = [], 0
        for name in names:
            z = F.relu(F.conv2d(z, state[f"{name}.weight"], state[f"{name}.bias"], padding=1))
            idx += 2  # conv, relu
            if idx - 1 in relus:
                out.append(z)
            if name in pools_after:
                z = F.avg_pool2d(z, 2)
                idx += 1
            if idx > max(relus):
                break
        return out

    return sum(F.l1_loss(a, b) for a, b in zip(feats(fake), feats(real)))


def test_the_paper_loss_is_the_caffe_vgg19_and_its_weight_reaches_the_loss(weights_dir: Path) -> None:
    from talkinghead.config import compose
    from talkinghead.training.build import build_module

    cfg = compose("meta_learn", ["experiment=vox2_paper", "model=small", f"weights_dir={weights_dir}"])
    assert cfg.loss.vgg19_input_norm == "caffe" and cfg.loss.vgg_pool == "avg"
    assert Path(cfg.loss.vgg19_path).name == "vgg19-d01eb7cb.pth"  # the Caffe file, not torchvision's
    module = build_module(cfg, num_videos=2)  # builds the content loss from cfg.loss, as training does
    vgg19 = module.content_loss.vgg19
    assert vgg19.input_norm == "caffe" and vgg19.weight_file == "vgg19_caffe"
    assert module.loss_weights["content_vgg19"] == 0.15 and module.loss_weights["content_vggface"] == 0.025
    fake, real = _face_like(size=32, seed=11), _face_like(size=32, seed=12)
    with torch.no_grad():
        got = module.weighted_total(module.content_loss.terms(fake, real))
    s19 = torch.load(weights_dir / "vgg19-d01eb7cb.pth", weights_only=True)
    sface = torch.load(weights_dir / "vgg_face_dag.pth", weights_only=True)
    l19 = _reference_l1(s19, fake, real, caffe_vgg19=True, relus={1, 6, 11, 20, 29})
    from talkinghead.losses.content import zoom_centre

    assert cfg.loss.vggface_zoom == 1.8  # VGGFace sees the central face box (FSTH's idt_embed crop)
    lface = _reference_l1(sface, zoom_centre(fake, 1.8), zoom_centre(real, 1.8), caffe_vgg19=False,
                          relus={1, 6, 11, 18, 25})
    assert float(l19) > 0 and float(lface) > 0
    assert torch.allclose(got, 0.15 * l19 + 0.025 * lface, rtol=1e-4), (got, l19, lface)
    # swapping the channel order (RGB into the Caffe net) would give another value: the test can fail
    wrong = _reference_l1(s19, fake.flip(1), real.flip(1), caffe_vgg19=True, relus={1, 6, 11, 20, 29})
    assert not torch.allclose(0.15 * wrong + 0.025 * lface, got, rtol=1e-3)


def test_the_torchvision_file_is_refused_as_the_caffe_vgg19(tmp_path: Path) -> None:
    tv = write_published("vgg19", tmp_path)
    with pytest.raises(Exception, match=r"vgg19-dcbb9e9d\.pth, trained on 'imagenet' input.*"
                                        r"vgg19_input_norm=imagenet") as info:
        ContentLoss(weight_vggface=0.0, vgg19_weights=tv)
    assert "\n" not in str(info.value)
    # the explicit choice of torchvision's VGG19 still works, with its own input convention
    loss = ContentLoss(weight_vggface=0.0, vgg19_weights=tv, vgg19_input_norm="imagenet", pool="max")
    assert loss.vgg19 is not None and loss.vgg19.input_norm == "imagenet"
    with pytest.raises(ValueError, match="vgg19_input_norm"):
        ContentLoss(weight_vggface=0.0, vgg19_weights=tv, vgg19_input_norm="bgr")


def test_a_config_saved_before_the_input_norm_key_keeps_its_training_setup(tmp_path: Path) -> None:
    from talkinghead.losses.content import content_loss_from_config

    tv = write_published("vgg19", tmp_path)
    old = {"weights": {"content_vgg19": 0.15, "content_vggface": 0.0}, "vgg19_path": str(tv)}
    loss = content_loss_from_config(old)
    assert loss is not None and loss.vgg19.input_norm == "imagenet" and loss.vgg19.pool == "max"
    assert loss.weight_vgg19 == 1.0  # unit weight: the training module applies 0.15
    assert content_loss_from_config({"weights": {"content_vgg19": 0, "content_vggface": 0}}) is None


def _fsth_crop_and_resize(images: torch.Tensor, crop_factor: float) -> torch.Tensor:
    """FSTH's ``criterions/idt_embed.py`` without keypoints: its fixed box [t, b, l, r] and ``crop_and_resize``."""
    h, w = images.shape[2:]
    t, l = h * (1 - crop_factor) / 2, w * (1 - crop_factor) / 2
    b, r = h - t, w - l
    theta = torch.zeros(images.shape[0], 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = (r - l) / w, (b - t) / h
    theta[:, 0, 2], theta[:, 1, 2] = (l + r) / w - 1, (t + b) / h - 1
    grid = torch.affine_grid_generator(theta, images.shape, False)
    return torch.nn.functional.grid_sample(images, grid, "bilinear", "reflection")


def test_vggface_sees_fsth_s_central_face_box() -> None:
    from talkinghead.losses.content import zoom_centre

    x = _face_like(size=64, seed=5)
    torch.testing.assert_close(zoom_centre(x, 1.8), _fsth_crop_and_resize(x, 1 / 1.8), rtol=0, atol=1e-6)
    assert zoom_centre(x, None) is x and zoom_centre(x, 1.0) is x


def test_with_the_zoom_vggface_ignores_the_border_and_vgg19_does_not(weights_dir: Path) -> None:
    zoomed = ContentLoss(weights_dir=weights_dir, vggface_zoom=1.8)
    whole = ContentLoss(weights_dir=weights_dir)
    x = _face_like(size=64, seed=6)
    y = x.clone()
    y[..., :8, :] = -y[..., :8, :]  # the top 8 rows: outside the central 64/1.8 = 35.6 rows (rows 14-50)
    with torch.no_grad():
        near, far = zoomed.terms(y, x), whole.terms(y, x)
    assert float(near["content_vggface"]) < 1e-6 < float(far["content_vggface"])
    assert float(near["content_vgg19"]) == pytest.approx(float(far["content_vgg19"]), rel=1e-6)
    with pytest.raises(ValueError, match="vggface_zoom"):
        ContentLoss(weights_dir=weights_dir, vggface_zoom=0.5)
