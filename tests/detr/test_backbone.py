"""ResNet backbone: frozen parts, key names, strides, mask resizing, local-only ImageNet weights."""

import functools
import os

import pytest
import torch
import torchvision
from torch import nn

from detr_lightning.detr.backbone import Backbone
from detr_lightning.errors import MissingFileError


def _torchvision_trunk_keys(name: str) -> set[str]:
    keys = getattr(torchvision.models, name)().state_dict().keys()
    return {k for k in keys if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}


def test_trunk_keys_are_plain_resnet_keys() -> None:
    backbone = Backbone("resnet18")
    assert set(backbone.body.state_dict()) == _torchvision_trunk_keys("resnet18")


def test_every_batchnorm_is_frozen() -> None:
    backbone = Backbone("resnet18")
    kinds = {type(m) for m in backbone.modules()}
    # fused into the convolutions by default (FoldedFrozenBatchNorm2d keeps the frozen buffers)
    assert any(issubclass(k, torchvision.ops.FrozenBatchNorm2d) for k in kinds)
    assert not any(issubclass(k, nn.modules.batchnorm._BatchNorm) for k in kinds)


@pytest.mark.parametrize("train_backbone", [True, False])
def test_stem_and_layer1_frozen_layers_2_to_4_follow_flag(train_backbone: bool) -> None:
    backbone = Backbone("resnet18", train_backbone=train_backbone)
    for name, param in backbone.body.named_parameters():
        stage = name.split(".")[0]
        expected = train_backbone and stage in ("layer2", "layer3", "layer4")
        assert param.requires_grad == expected, name


def test_output_stride_channels_and_dilation() -> None:
    x = torch.randn(1, 3, 64, 96)
    ((feat, mask),) = Backbone("resnet18")(x)
    assert feat.shape == (1, 512, 2, 3) and mask.shape == (1, 2, 3) and mask.all()
    stages = Backbone("resnet18", return_interm_layers=True)(x)
    assert [f.shape[1] for f, _ in stages] == [64, 128, 256, 512]
    assert [f.shape[-1] for f, _ in stages] == [24, 12, 6, 3]
    assert Backbone("resnet34").num_channels == 512


def test_dc5_dilates_the_last_stage() -> None:
    dc5 = Backbone("resnet50", dilation=True)
    assert dc5.num_channels == 2048
    ((feat, mask),) = dc5(torch.randn(1, 3, 64, 96))
    assert feat.shape == (1, 2048, 4, 6) and mask.shape == (1, 4, 6)  # stride 16, not 32
    assert dc5.body.get_submodule("layer4.0.conv2").dilation == (1, 1)  # first block keeps 1
    assert dc5.body.get_submodule("layer4.1.conv2").dilation == (2, 2)
    with pytest.raises(ValueError, match="resnet18"):
        Backbone("resnet18", dilation=True)


def test_mask_is_resized_to_every_feature_map() -> None:
    pixel_mask = torch.zeros(2, 128, 128, dtype=torch.bool)
    pixel_mask[0, :64, :96] = True  # real region 64x96 of a 128x128 canvas
    pixel_mask[1] = True
    stages = Backbone("resnet18", return_interm_layers=True)(
        torch.randn(2, 3, 128, 128), pixel_mask
    )
    for (feat, mask), stride in zip(stages, (4, 8, 16, 32), strict=True):
        side = 128 // stride
        assert mask.shape == (2, side, side) and feat.shape[-2:] == (side, side)
        expected = torch.zeros(side, side, dtype=torch.bool)
        expected[: 64 // stride, : 96 // stride] = True
        assert torch.equal(mask[0], expected)
        assert mask[1].all()


def test_unknown_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="resnet152"):
        Backbone("resnet152")


def _expected_cache_file(torch_home: str) -> str:
    filename = os.path.basename(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url)
    return os.path.join(torch_home, "hub", "checkpoints", filename)


def test_pretrained_reads_local_torch_cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = torchvision.models.resnet18()
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so their loading is visible
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    path = _expected_cache_file(str(tmp_path))
    os.makedirs(os.path.dirname(path))
    torch.save(reference.state_dict(), path)

    backbone = Backbone("resnet18", pretrained=True, train_backbone=True)
    expected = reference.state_dict()
    loaded = backbone.body.state_dict()
    assert set(loaded) == _torchvision_trunk_keys("resnet18")
    for key, value in loaded.items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0, msg=key)
    assert backbone.body.get_submodule("layer2.0.conv1").weight.requires_grad
    assert not backbone.body.conv1.weight.requires_grad


def test_pretrained_missing_file_names_path_and_never_downloads(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = _expected_cache_file(str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        Backbone("resnet18", pretrained=True)
    assert path in str(info.value) and "TORCH_HOME" in str(info.value)
    # torch.hub's layout, not "$TORCH_HOME/checkpoints/": a user following it must succeed.
    assert "$TORCH_HOME/hub/checkpoints/" in str(info.value)
    assert path == os.path.join(str(tmp_path), "hub", "checkpoints", os.path.basename(path))
    assert not os.path.exists(path)
    assert isinstance(info.value, MissingFileError)  # the entry points print the message alone


def test_an_empty_torch_home_is_named_and_the_path_is_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", "")
    with pytest.raises(MissingFileError) as info:
        Backbone("resnet18", pretrained=True)
    message = str(info.value)
    assert f"not found at {tmp_path}{os.sep}hub{os.sep}checkpoints{os.sep}resnet18-" in message
    assert "(TORCH_HOME is set but empty)" in message


def test_backbone_levers():
    backbone = Backbone("resnet18", norm="bn", last_stage="layer3", train_stem=True)
    assert backbone.num_channels == 256
    assert all(p.requires_grad for p in backbone.parameters())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules())
    feats, mask = backbone(torch.randn(1, 3, 64, 64), torch.ones(1, 64, 64, dtype=torch.bool))[-1]
    assert feats.shape == (1, 256, 4, 4) and mask.shape == (1, 4, 4)
    paper = Backbone("resnet18")
    frozen = {n.split(".")[0] for n, p in paper.body.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "layer1"} or frozen == {"layer1"}  # FrozenBN has buffers only
    with pytest.raises(ValueError, match="last_stage"):
        Backbone("resnet18", last_stage="layer5")


@functools.cache
def _calibrated_statistics(name: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    calibrating = Backbone(name, norm="bn", fuse_frozen_bn=False, channels_last=False)
    for m in calibrating.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1.0
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.uniform_(m.bias, -0.2, 0.2)
    calibrating.train()(torch.randn(2, 3, 64, 96))
    return calibrating.state_dict()


def _calibrated_frozen_bn_backbone(name: str = "resnet18", **kwargs) -> Backbone:
    """A backbone whose frozen BatchNorms hold real statistics (those of a random batch), so
    features stay O(1) through the depth, as with ImageNet weights."""
    backbone = Backbone(name, **kwargs)
    missing = backbone.load_state_dict(_calibrated_statistics(name), strict=False)
    assert not missing.missing_keys
    return backbone.eval()


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_folded_and_unfolded_backbones_give_the_same_features(name: str) -> None:
    """Folding is exact algebra: in float64 (where rounding cannot hide a wrong scale, shift or
    eps) fused and folded features equal the plain frozen-BatchNorm ones within 1e-5."""
    from detr_lightning.detr.frozen_bn import ConvFrozenBN

    plain = _calibrated_frozen_bn_backbone(name, fuse_frozen_bn=False, channels_last=False)
    fused = _calibrated_frozen_bn_backbone(name)  # the default: fused, channels-last
    folded = _calibrated_frozen_bn_backbone(name).double().fold_batchnorm()
    assert any(isinstance(m, ConvFrozenBN) for m in fused.modules())
    assert not any(isinstance(m, torchvision.ops.FrozenBatchNorm2d) for m in folded.modules())
    assert set(fused.state_dict()) == set(plain.state_dict())  # training keys unchanged
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    with torch.no_grad():
        ref = plain.double()(x)[0][0]
        assert 0.1 < ref.abs().mean() < 10  # calibrated: the tolerance below is meaningful
        for other in (fused.double(), folded):
            torch.testing.assert_close(other(x)[0][0], ref, atol=1e-5, rtol=0)


def test_float32_folding_error_is_float32_rounding() -> None:
    """In float32 the folded features differ from the plain ones by rounding only: a few 1e-6
    of the feature scale on resnet18 (a deep random net amplifies rounding, hence resnet18)."""
    plain = _calibrated_frozen_bn_backbone(fuse_frozen_bn=False, channels_last=False)
    folded = _calibrated_frozen_bn_backbone().fold_batchnorm()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref = plain(x)[0][0]
        assert (folded(x)[0][0] - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_fused_frozen_bn_trains_the_same_weights_and_keeps_statistics() -> None:
    plain = _calibrated_frozen_bn_backbone(fuse_frozen_bn=False, channels_last=False).train()
    fused = _calibrated_frozen_bn_backbone().train()
    stats = {k: v.clone() for k, v in fused.state_dict().items() if "running" in k}
    x = torch.randn(2, 3, 64, 96)
    grads = []
    for model in (plain, fused):
        trainable = [p for p in model.parameters() if p.requires_grad]
        grads.append(torch.autograd.grad(model(x)[0][0].square().mean(), trainable))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-3)
    assert all(torch.equal(v, fused.state_dict()[k]) for k, v in stats.items())  # still frozen
