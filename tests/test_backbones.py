"""Pretrained backbones: published key layouts, checked loading, preprocessing, FID use, `make weights`."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from _published_weights import published_state, write_published
from talkinghead.backbones import weights as W
from talkinghead.backbones.inception import FIDInceptionV3, _pool3x3_same
from talkinghead.backbones.vgg19 import VGG19
from talkinghead.backbones.vggface import VGGFace

# ----------------------------------------------------------------------------------------------------------
# The published layouts, written from the architecture specs (torchvision vgg19 cfg "E"; vgg_face_dag's
# named VGG16 layers; pytorch-fid's InceptionV3 = torchvision Inception3 names, no aux head, fc 1008).

_VGG19_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
                (14, 256, 256), (16, 256, 256), (19, 256, 512), (21, 512, 512), (23, 512, 512),
                (25, 512, 512), (28, 512, 512), (30, 512, 512), (32, 512, 512), (34, 512, 512)]
VGG19_PUBLISHED: dict[str, tuple[int, ...]] = {}
for _i, _cin, _cout in _VGG19_CONVS:
    VGG19_PUBLISHED[f"features.{_i}.weight"] = (_cout, _cin, 3, 3)
    VGG19_PUBLISHED[f"features.{_i}.bias"] = (_cout,)
VGG19_CAFFE_PUBLISHED = dict(VGG19_PUBLISHED)
VGG19_PUBLISHED.update({"classifier.0.weight": (4096, 25088), "classifier.0.bias": (4096,),
                        "classifier.3.weight": (4096, 4096), "classifier.3.bias": (4096,),
                        "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)})
# jcjohnson's Caffe conversion was saved from the 2017 torchvision VGG, whose classifier began with Dropout:
# Linear layers at 1, 4, 6 (FSTH's loader renames classifier.6 -> classifier.7 for today's torchvision).
VGG19_CAFFE_PUBLISHED.update({"classifier.1.weight": (4096, 25088), "classifier.1.bias": (4096,),
                              "classifier.4.weight": (4096, 4096), "classifier.4.bias": (4096,),
                              "classifier.6.weight": (1000, 4096), "classifier.6.bias": (1000,)})

_VGGFACE_CONVS = [("conv1_1", 3, 64), ("conv1_2", 64, 64), ("conv2_1", 64, 128), ("conv2_2", 128, 128),
                  ("conv3_1", 128, 256), ("conv3_2", 256, 256), ("conv3_3", 256, 256),
                  ("conv4_1", 256, 512), ("conv4_2", 512, 512), ("conv4_3", 512, 512),
                  ("conv5_1", 512, 512), ("conv5_2", 512, 512), ("conv5_3", 512, 512)]
VGGFACE_PUBLISHED: dict[str, tuple[int, ...]] = {}
for _n, _cin, _cout in _VGGFACE_CONVS:
    VGGFACE_PUBLISHED[f"{_n}.weight"] = (_cout, _cin, 3, 3)
    VGGFACE_PUBLISHED[f"{_n}.bias"] = (_cout,)
VGGFACE_PUBLISHED.update({"fc6.weight": (4096, 25088), "fc6.bias": (4096,), "fc7.weight": (4096, 4096),
                          "fc7.bias": (4096,), "fc8.weight": (2622, 4096), "fc8.bias": (2622,)})


def _inception_units() -> dict[str, tuple[int, int, int, int]]:
    """unit name -> (out, in, kh, kw) for all 94 BasicConv2d units of the FID InceptionV3."""
    u: dict[str, tuple[int, int, int, int]] = {
        "Conv2d_1a_3x3": (32, 3, 3, 3), "Conv2d_2a_3x3": (32, 32, 3, 3), "Conv2d_2b_3x3": (64, 32, 3, 3),
        "Conv2d_3b_1x1": (80, 64, 1, 1), "Conv2d_4a_3x3": (192, 80, 3, 3)}
    for blk, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):
        u.update({f"{blk}.branch1x1": (64, cin, 1, 1), f"{blk}.branch5x5_1": (48, cin, 1, 1),
                  f"{blk}.branch5x5_2": (64, 48, 5, 5), f"{blk}.branch3x3dbl_1": (64, cin, 1, 1),
                  f"{blk}.branch3x3dbl_2": (96, 64, 3, 3), f"{blk}.branch3x3dbl_3": (96, 96, 3, 3),
                  f"{blk}.branch_pool": (pool, cin, 1, 1)})
    u.update({"Mixed_6a.branch3x3": (384, 288, 3, 3), "Mixed_6a.branch3x3dbl_1": (64, 288, 1, 1),
              "Mixed_6a.branch3x3dbl_2": (96, 64, 3, 3), "Mixed_6a.branch3x3dbl_3": (96, 96, 3, 3)})
    for blk, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):
        u.update({f"{blk}.branch1x1": (192, 768, 1, 1), f"{blk}.branch7x7_1": (c7, 768, 1, 1),
                  f"{blk}.branch7x7_2": (c7, c7, 1, 7), f"{blk}.branch7x7_3": (192, c7, 7, 1),
                  f"{blk}.branch7x7dbl_1": (c7, 768, 1, 1), f"{blk}.branch7x7dbl_2": (c7, c7, 7, 1),
                  f"{blk}.branch7x7dbl_3": (c7, c7, 1, 7), f"{blk}.branch7x7dbl_4": (c7, c7, 7, 1),
                  f"{blk}.branch7x7dbl_5": (192, c7, 1, 7), f"{blk}.branch_pool": (192, 768, 1, 1)})
    u.update({"Mixed_7a.branch3x3_1": (192, 768, 1, 1), "Mixed_7a.branch3x3_2": (320, 192, 3, 3),
              "Mixed_7a.branch7x7x3_1": (192, 768, 1, 1), "Mixed_7a.branch7x7x3_2": (192, 192, 1, 7),
              "Mixed_7a.branch7x7x3_3": (192, 192, 7, 1), "Mixed_7a.branch7x7x3_4": (192, 192, 3, 3)})
    for blk, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):
        u.update({f"{blk}.branch1x1": (320, cin, 1, 1), f"{blk}.branch3x3_1": (384, cin, 1, 1),
                  f"{blk}.branch3x3_2a": (384, 384, 1, 3), f"{blk}.branch3x3_2b": (384, 384, 3, 1),
                  f"{blk}.branch3x3dbl_1": (448, cin, 1, 1), f"{blk}.branch3x3dbl_2": (384, 448, 3, 3),
                  f"{blk}.branch3x3dbl_3a": (384, 384, 1, 3), f"{blk}.branch3x3dbl_3b": (384, 384, 3, 1),
                  f"{blk}.branch_pool": (192, cin, 1, 1)})
    return u


INCEPTION_PUBLISHED: dict[str, tuple[int, ...]] = {}
for _unit, (_o, _i2, _kh, _kw) in _inception_units().items():
    INCEPTION_PUBLISHED[f"{_unit}.conv.weight"] = (_o, _i2, _kh, _kw)
    for _p in ("weight", "bias", "running_mean", "running_var"):
        INCEPTION_PUBLISHED[f"{_unit}.bn.{_p}"] = (_o,)
INCEPTION_PUBLISHED.update({"fc.weight": (1008, 2048), "fc.bias": (1008,)})


def _layout(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()
            if not k.endswith("num_batches_tracked")}


# ---------------------------------------------------------------------------------------------- layouts


def test_published_layout_fixture_sizes() -> None:
    assert len(VGG19_PUBLISHED) == 38 and len(VGGFACE_PUBLISHED) == 32 and len(VGG19_CAFFE_PUBLISHED) == 38
    assert len(_inception_units()) == 94 and len(INCEPTION_PUBLISHED) == 472
    assert INCEPTION_PUBLISHED["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)


def test_vgg19_state_dict_is_torchvision_layout() -> None:
    with torch.device("meta"):
        full, feats = VGG19(include_classifier=True), VGG19()
    assert _layout(full) == VGG19_PUBLISHED
    assert _layout(feats) == {k: s for k, s in VGG19_PUBLISHED.items() if k.startswith("features.")}
    assert len(full.features) == 37
    assert _layout(full)["features.0.weight"] == (64, 3, 3, 3)


def test_caffe_vgg19_is_the_jcjohnson_layout_and_is_registered_for_make_weights() -> None:
    with torch.device("meta"):
        full = VGG19(input_norm="caffe", include_classifier=True)
    assert _layout(full) == VGG19_CAFFE_PUBLISHED
    assert W.published_layout("vgg19_caffe") == VGG19_CAFFE_PUBLISHED
    assert W.published_layout("vgg19") == VGG19_PUBLISHED and W.published_layout("vggface") == VGGFACE_PUBLISHED
    spec = W.get_spec("vgg19_caffe")
    assert spec.filename == "vgg19-d01eb7cb.pth" and spec.sha256_prefix == "d01eb7cb"
    assert spec.url == "https://s3-us-west-2.amazonaws.com/jcjohns-models/vgg19-d01eb7cb.pth"
    assert spec.mirrors == ("https://web.eecs.umich.edu/~justincj/models/vgg19-d01eb7cb.pth",)
    assert full.weight_file == "vgg19_caffe" and VGG19().weight_file == "vgg19"


def test_each_vgg19_file_loads_only_with_its_own_input_convention(weight_dir: Path, tmp_path: Path) -> None:
    caffe = write_published("vgg19_caffe", tmp_path, seed=2)
    net = VGG19.from_file(caffe, input_norm="caffe", pool="avg")
    saved = torch.load(caffe, weights_only=True)
    assert torch.equal(net.features[34].weight, saved["features.34.weight"])
    assert isinstance(net.features[4], torch.nn.AvgPool2d) and isinstance(VGG19().features[4], torch.nn.MaxPool2d)
    with pytest.raises(W.WeightLayoutError, match=r"it is the other VGG19 file \(vgg19-d01eb7cb\.pth, trained on "
                                                  r"'caffe' input\): set vgg19_input_norm=caffe"):
        VGG19.from_file(caffe)  # default input_norm: torchvision's
    with pytest.raises(W.WeightLayoutError, match=r"vgg19-dcbb9e9d\.pth, trained on 'imagenet'"):
        VGG19.from_file(weight_dir / "vgg19-dcbb9e9d.pth", input_norm="caffe")


def test_vggface_state_dict_is_vgg_face_dag_layout() -> None:
    with torch.device("meta"):
        full, feats = VGGFace(include_classifier=True), VGGFace()
    assert _layout(full) == VGGFACE_PUBLISHED
    assert _layout(feats) == {k: s for k, s in VGGFACE_PUBLISHED.items() if k.startswith("conv")}
    assert _layout(full)["conv5_3.weight"] == (512, 512, 3, 3)
    names = feats.layer_names
    assert len(names) == 31 and [names[i] for i in (1, 6, 11, 18, 25)] == [
        "relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]


def test_fid_inception_state_dict_is_pytorch_fid_layout() -> None:
    with torch.device("meta"):
        net = FIDInceptionV3()
    assert _layout(net) == INCEPTION_PUBLISHED
    assert net.num_features == 2048


@pytest.mark.parametrize("name,cls,n_params", [("vgg19", VGG19, 20_024_384), ("vggface", VGGFace, 14_714_688),
                                               ("inception_fid", FIDInceptionV3, 23_850_960)])
def test_parameter_counts(name: str, cls: type, n_params: int) -> None:
    with torch.device("meta"):
        net = cls()
    assert sum(p.numel() for p in net.parameters()) == n_params


# ------------------------------------------------------------------------------------------ loading


@pytest.fixture(scope="module")
def weight_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("weights")
    for name in ("vgg19", "vggface", "inception_fid"):
        write_published(name, d, seed=1)
    return d


def test_roundtrip_vgg19_through_resolve(weight_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(W.ENV_VAR, str(weight_dir))
    path = W.resolve("vgg19")
    assert path == weight_dir / "vgg19-dcbb9e9d.pth"
    net = VGG19.from_file(path)
    saved = torch.load(path, weights_only=True)
    for k, v in net.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_roundtrip_vggface_and_inception(weight_dir: Path) -> None:
    face = VGGFace.from_file(W.resolve("vggface", directory=weight_dir))
    saved = torch.load(weight_dir / "vgg_face_dag.pth", weights_only=True)
    assert torch.equal(face.conv5_3.weight, saved["conv5_3.weight"])
    inc = FIDInceptionV3.from_file(W.resolve("inception_fid", directory=weight_dir))
    saved = torch.load(weight_dir / "pt_inception-2015-12-05-6726825d.pth", weights_only=True)
    assert "Mixed_5b.branch1x1.bn.num_batches_tracked" not in saved  # old files lack it: still loads
    assert torch.equal(inc.Mixed_7c.branch_pool.conv.weight, saved["Mixed_7c.branch_pool.conv.weight"])
    assert torch.equal(inc.Conv2d_1a_3x3.bn.running_mean, saved["Conv2d_1a_3x3.bn.running_mean"])


def test_explicit_path_wins_and_missing_file_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(W.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(W.MissingWeightsError) as info:
        W.resolve("vggface", config_key="loss.weights.content_vggface")
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError) and "\n" not in msg
    assert "vgg_face_dag.pth" in msg and str(tmp_path / "nowhere" / "vgg_face_dag.pth") in msg
    assert "make weights" in msg and "loss.weights.content_vggface=0" in msg
    other = write_published("vgg19", tmp_path / "elsewhere")
    assert W.resolve("vgg19", other) == other
    with pytest.raises(W.MissingWeightsError, match="typo.pth"):
        W.resolve("vgg19", tmp_path / "typo.pth")


def test_wrong_keys_are_refused_with_the_keys_named(tmp_path: Path) -> None:
    # a VGG-Face file handed to VGG19: every key is wrong
    face = write_published("vggface", tmp_path / "a")
    with pytest.raises(W.WeightLayoutError,
                       match=r"missing keys: features\.0\.weight.*unexpected keys: conv1_1"):
        VGG19.from_file(face)
    # one tensor of the wrong shape
    state = published_state("vgg19")
    state["features.34.weight"] = torch.zeros(256, 512, 3, 3)
    torch.save(state, tmp_path / "bad_shape.pth")
    with pytest.raises(W.WeightLayoutError,
                       match=r"features\.34\.weight \(256, 512, 3, 3\)!=\(512, 512, 3, 3\)"):
        VGG19.from_file(tmp_path / "bad_shape.pth")
    # the classifier head is part of the published file: its absence means a different file
    state = {k: v for k, v in published_state("vgg19").items() if not k.startswith("classifier.")}
    torch.save(state, tmp_path / "no_head.pth")
    with pytest.raises(W.WeightLayoutError, match=r"missing keys: classifier\.0\.weight"):
        VGG19.from_file(tmp_path / "no_head.pth")
    # not a state dict at all
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(W.WeightLayoutError, match="not a state dict"):
        VGGFace.from_file(tmp_path / "list.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(W.WeightLayoutError, match="could not read"):
        FIDInceptionV3.from_file(tmp_path / "junk.pth")


# ------------------------------------------------------------------------------------ preprocessing


def _pixel(r: float, g: float, b: float) -> torch.Tensor:
    return torch.tensor([r, g, b]).view(1, 3, 1, 1)


def test_vgg19_preprocessing_matches_torchvision_training_input() -> None:
    net = VGG19()  # default: torchvision weights -> RGB [0,1], ImageNet mean/std
    out = net.preprocess(_pixel(1.0, -1.0, 0.0)).flatten()  # [-1,1]: red full, green none, blue half
    expect = torch.tensor([(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (0.5 - 0.406) / 0.225])
    assert torch.allclose(out, expect, atol=1e-5)
    same = net.preprocess(_pixel(1.0, 0.0, 0.5), value_range=(0.0, 1.0)).flatten()
    assert torch.allclose(same, expect, atol=1e-5)


def test_vgg19_caffe_option_is_bgr_0_255_mean_subtracted() -> None:
    out = VGG19(input_norm="caffe").preprocess(_pixel(1.0, -1.0, 0.0)).flatten()  # R=255, G=0, B=127.5
    assert torch.allclose(out, torch.tensor([127.5 - 103.939, 0.0 - 116.779, 255.0 - 123.68]), atol=1e-3)
    with pytest.raises(ValueError, match="input_norm"):
        VGG19(input_norm="rgb01")  # type: ignore[arg-type]


def test_vggface_preprocessing_is_rgb_0_255_minus_meta_mean() -> None:
    out = VGGFace().preprocess(_pixel(1.0, -1.0, 0.0)).flatten()
    expect = torch.tensor([255.0 - 129.186279296875, 0.0 - 104.76238250732422, 127.5 - 93.59396362304688])
    assert torch.allclose(out, expect, atol=1e-3)
    # the scale the net sees is hundreds, not the raw [-1, 1] of our images
    assert VGGFace().preprocess(torch.rand(1, 3, 8, 8) * 2 - 1).abs().max() > 20


def test_fid_inception_input_conversion() -> None:
    net = FIDInceptionV3(resize_input=False)
    u8 = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 3, 1, 1).expand(1, 3, 80, 80)
    out = net.preprocess(u8)[0, :, 0, 0]
    assert torch.allclose(out, torch.tensor([-1.0, 1.0, 51 / 255 * 2 - 1]), atol=1e-6)
    assert torch.allclose(net.preprocess(torch.full((1, 3, 80, 80), 0.5)), torch.zeros(1, 3, 80, 80))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        net.preprocess(torch.full((1, 3, 80, 80), -0.5))  # [-1, 1] images are refused, not misread
    assert FIDInceptionV3().preprocess(torch.rand(2, 3, 64, 64)).shape == (2, 3, 299, 299)


def test_fid_pooling_quirks() -> None:
    ones = torch.ones(1, 1, 5, 5)
    assert torch.equal(_pool3x3_same(ones, "avg"), ones)  # TF: padding not counted
    assert not torch.equal(F.avg_pool2d(ones, 3, 1, 1), ones)  # torchvision default would differ
    with torch.device("meta"):
        net = FIDInceptionV3()
    assert net.Mixed_7b.pool == "avg" and net.Mixed_7c.pool == "max"


# ------------------------------------------------------------------------------------- activations


def test_activation_indices_and_frozen_gradients(weight_dir: Path) -> None:
    net = VGG19.from_file(weight_dir / "vgg19-dcbb9e9d.pth").freeze()
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_(True)
    acts = net.activations(x)
    assert [tuple(a.shape[1:]) for a in acts] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4),
                                                  (512, 2, 2)]
    manual = F.relu(F.conv2d(net.preprocess(x), net.features[0].weight, net.features[0].bias, padding=1))
    assert torch.allclose(acts[0], manual, atol=1e-5)  # index 1 = relu1_1
    conv0 = net.activations(x, layers=[0, 1])[0]  # a requested conv output is not clobbered by the ReLU
    assert (conv0 < 0).any()
    acts[-1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training  # frozen backbones ignore .train()
    with pytest.raises(ValueError, match="at least 16x16"):
        net.activations(torch.zeros(1, 3, 8, 8), layers=[29])
    with pytest.raises(ValueError, match="0..36"):
        net.activations(x, layers=[37])


def test_vggface_activations_shapes(weight_dir: Path) -> None:
    net = VGGFace.from_file(weight_dir / "vgg_face_dag.pth").freeze()
    acts = net.activations(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert [tuple(a.shape[1:]) for a in acts] == [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8),
                                                  (512, 4, 4)]


def test_freeze_out_of_state_dict_keeps_weights_usable(weight_dir: Path) -> None:
    net = VGG19.from_file(weight_dir / "vgg19-dcbb9e9d.pth")
    x = torch.rand(1, 3, 32, 32)
    before = net.activations(x, layers=[6])[0]
    net.freeze(in_state_dict=False)
    assert net.state_dict() == {}
    assert all(not p.requires_grad for p in net.parameters())
    assert sum(p.numel() for p in net.parameters()) == 20_024_384  # still there, still move with .to()
    parent = torch.nn.ModuleDict({"head": torch.nn.Linear(2, 2), "vgg": net})
    assert set(parent.state_dict()) == {"head.weight", "head.bias"}
    parent.load_state_dict(parent.state_dict(), strict=True)  # a checkpoint without the backbone loads
    assert torch.equal(net.activations(x, layers=[6])[0], before)


# --------------------------------------------------------------------------------------------- FID


def test_fid_inception_with_torchmetrics(weight_dir: Path) -> None:
    from torchmetrics.image.fid import FrechetInceptionDistance

    net = FIDInceptionV3.from_file(weight_dir / "pt_inception-2015-12-05-6726825d.pth")
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8, generator=g)
    with torch.no_grad():
        feats = net(imgs)
    assert feats.shape == (8, 2048) and feats.dtype == torch.float32
    fid = FrechetInceptionDistance(feature=net)
    fid.train()
    assert not net.training  # the metric (or Lightning) switching to train must not touch BN
    fid.update(imgs, real=True)
    fid.update(imgs, real=False)
    same = float(fid.compute())  # one 2048x2048 eigendecomposition: the slow part of this file
    scale = float(torch.cov(feats.double().T).trace())
    assert scale > 1e-3  # the features do vary over the images (so ~0 below is not vacuous)
    assert abs(same) < 1e-3 * scale, (same, scale)
    assert int(fid.real_features_num_samples) == 8 and fid.real_features_sum.shape == (2048,)
    # the float [0, 1] path (normalize=True hands floats through unchanged) gives the same features
    with torch.no_grad():
        assert torch.allclose(net(imgs.float() / 255), feats, atol=1e-5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        FrechetInceptionDistance(feature=net, normalize=True).update(imgs.float() / 127.5 - 1, real=True)


# ----------------------------------------------------------------------------------- make weights


def _spec_for(tmp_path: Path, payload: bytes, **kw: str) -> W.WeightSpec:
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    return dataclasses.replace(W.get_spec("vgg19"), url=src.as_uri(), **kw)


def test_download_verifies_checksum_and_writes_atomically(tmp_path: Path) -> None:
    payload = b"weights" * 1000
    digest = hashlib.sha256(payload).hexdigest()
    out = tmp_path / "out"
    good = _spec_for(tmp_path, payload, sha256_prefix=digest[:8])
    path = W.download(good, out, progress=False)
    assert path == out / "vgg19-dcbb9e9d.pth" and path.read_bytes() == payload
    bad = dataclasses.replace(good, sha256_prefix="00000000" if digest[:8] != "00000000" else "11111111")
    with pytest.raises(W.ChecksumError, match="does not start with"):
        W.download(bad, tmp_path / "out2", progress=False)
    assert list((tmp_path / "out2").iterdir()) == []  # no partial or wrong file left behind
    with pytest.raises(W.ChecksumError, match="sha256"):
        W.download(dataclasses.replace(good, sha256="ab" * 32, sha256_prefix=None), out, progress=False)


def test_a_download_without_checksum_must_have_the_published_layout(weight_dir: Path, tmp_path: Path) -> None:
    """vgg_face_dag.pth has no published checksum: its key layout is what is verified, before it is kept."""
    spec = W.get_spec("vggface")
    assert not spec.has_checksum and spec.network is not None
    good = dataclasses.replace(spec, url=(weight_dir / "vgg_face_dag.pth").as_uri())
    out = tmp_path / "ok"
    assert W.download(good, out, progress=False) == out / "vgg_face_dag.pth"
    assert W.download(good, out, progress=False) == out / "vgg_face_dag.pth"  # present: re-checked, kept
    wrong = dataclasses.replace(spec, url=(weight_dir / "vgg19-dcbb9e9d.pth").as_uri())
    with pytest.raises(W.WeightLayoutError, match=r"published vggface key layout.*missing keys: conv1_1\.weight"
                                                  r".*no checksum is published for vgg_face_dag\.pth") as info:
        W.download(wrong, tmp_path / "bad", progress=False)
    assert "\n" not in str(info.value)
    assert list((tmp_path / "bad").iterdir()) == []  # refused: nothing kept
    # an existing file of the wrong layout is moved aside, so that `make weights` fetches the real one
    (tmp_path / "bad" / "vgg_face_dag.pth").write_bytes((weight_dir / "vgg19-dcbb9e9d.pth").read_bytes())
    with pytest.raises(W.WeightLayoutError, match="moved it aside"):
        W.download(good, tmp_path / "bad", progress=False)
    assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == ["vgg_face_dag.pth.rejected"]
    assert W.download(good, tmp_path / "bad", progress=False).is_file()


def test_download_falls_back_to_the_mirror(tmp_path: Path) -> None:
    payload = b"caffe" * 1000
    src = tmp_path / "src.bin"
    src.write_bytes(payload)
    spec = dataclasses.replace(W.get_spec("vgg19_caffe"), url="http://127.0.0.1:9/vgg19-d01eb7cb.pth",
                               mirrors=(src.as_uri(),), sha256_prefix=hashlib.sha256(payload).hexdigest()[:8])
    assert W.download(spec, tmp_path / "out", progress=False).read_bytes() == payload
    none = dataclasses.replace(spec, mirrors=("http://127.0.0.1:9/mirror.pth",))
    with pytest.raises(W.DownloadError, match=r"127\.0\.0\.1:9/vgg19-d01eb7cb\.pth: .*127\.0\.0\.1:9/mirror"):
        W.download(none, tmp_path / "none", progress=False)
    assert list((tmp_path / "none").iterdir()) == []


def test_download_cli_fails_clearly_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    unreachable = dataclasses.replace(W.get_spec("vgg19"), url="http://127.0.0.1:9/vgg19-dcbb9e9d.pth")
    monkeypatch.setitem(W.REGISTRY, "vgg19", unreachable)
    rc = W.main(["download", "--dir", str(tmp_path), "--only", "vgg19", "--quiet"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "could not download vgg19-dcbb9e9d.pth from http://127.0.0.1:9/" in err
    assert str(tmp_path / "vgg19-dcbb9e9d.pth") in err
    assert list(tmp_path.iterdir()) == []


def test_list_cli_and_registry_extension(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    write_published("vggface", tmp_path)
    monkeypatch.setattr(W, "REGISTRY", dict(W.REGISTRY))
    W.register(W.WeightSpec(name="extra", url="https://example.org/extra.pth", filename="extra.pth"))
    with pytest.raises(ValueError, match="already registered"):
        W.register(W.WeightSpec(name="extra", url="https://example.org/x.pth", filename="x.pth"))
    assert W.main(["list", "--dir", str(tmp_path)]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines()[1:]}
    assert "present" in lines["vggface"] and "MISSING" in lines["vgg19"] and "MISSING" in lines["extra"]
    assert str(tmp_path / "vgg_face_dag.pth") in lines["vggface"]
