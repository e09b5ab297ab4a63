"""Official DETR checkpoint loading on state dicts written in the official key format.

The official key list is enumerated here from the official module structure (torchvision ResNet
trunk under ``backbone.0.body``, nn.MultiheadAttention-style layers, heads), independently of
the project's converter.
"""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from official_reference import RefTransformer
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detr_lightning.detr.model import build_detr
from detr_lightning.detr.official import (
    convert_official_state_dict,
    infer_official_config,
    load_official_detr,
    load_pretrained_into,
)

D, FF, Q, C = 64, 96, 7, 5


def _attn(prefix: str) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.in_proj_weight": (3 * D, D),
        f"{prefix}.in_proj_bias": (3 * D,),
        f"{prefix}.out_proj.weight": (D, D),
        f"{prefix}.out_proj.bias": (D,),
    }


def _ffn_and_norms(prefix: str, norms: int) -> dict[str, tuple[int, ...]]:
    shapes = {
        f"{prefix}.linear1.weight": (FF, D),
        f"{prefix}.linear1.bias": (FF,),
        f"{prefix}.linear2.weight": (D, FF),
        f"{prefix}.linear2.bias": (D,),
    }
    for n in range(1, norms + 1):
        shapes.update({f"{prefix}.norm{n}.weight": (D,), f"{prefix}.norm{n}.bias": (D,)})
    return shapes


def official_shapes(
    resnet: str = "resnet18", enc: int = 2, dec: int = 2, pre_norm: bool = False,
    learned_pos: bool = False, num_classes: int = C,
) -> dict[str, tuple[int, ...]]:  # fmt: skip
    trunk = getattr(torchvision.models, resnet)(norm_layer=FrozenBatchNorm2d).state_dict()
    out_channels = trunk["layer4.0.conv1.weight"].shape[0] * (
        4 if "layer4.0.conv3.weight" in trunk else 1
    )
    shapes = {f"backbone.0.body.{k}": tuple(v.shape) for k, v in trunk.items() if "fc." not in k}
    if learned_pos:
        shapes.update({"backbone.1.row_embed.weight": (50, D // 2)})
        shapes.update({"backbone.1.col_embed.weight": (50, D // 2)})
    for i in range(enc):
        shapes.update(_attn(f"transformer.encoder.layers.{i}.self_attn"))
        shapes.update(_ffn_and_norms(f"transformer.encoder.layers.{i}", 2))
    for i in range(dec):
        shapes.update(_attn(f"transformer.decoder.layers.{i}.self_attn"))
        shapes.update(_attn(f"transformer.decoder.layers.{i}.multihead_attn"))
        shapes.update(_ffn_and_norms(f"transformer.decoder.layers.{i}", 3))
    norms = ["decoder"] + (["encoder"] if pre_norm else [])
    for part in norms:
        shapes.update(
            {f"transformer.{part}.norm.weight": (D,), f"transformer.{part}.norm.bias": (D,)}
        )
    shapes.update({
        "class_embed.weight": (num_classes + 1, D), "class_embed.bias": (num_classes + 1,),
        "bbox_embed.layers.0.weight": (D, D), "bbox_embed.layers.0.bias": (D,),
        "bbox_embed.layers.1.weight": (D, D), "bbox_embed.layers.1.bias": (D,),
        "bbox_embed.layers.2.weight": (4, D), "bbox_embed.layers.2.bias": (4,),
        "query_embed.weight": (Q, D), "input_proj.weight": (D, out_channels, 1, 1), "input_proj.bias": (D,),
    })  # fmt: skip
    return shapes


def random_official_sd(**kwargs) -> dict[str, torch.Tensor]:
    sd = {}
    for key, shape in official_shapes(**kwargs).items():
        value = torch.randn(shape) * 0.1
        sd[key] = value.abs() + 0.5 if key.endswith("running_var") else value
    return sd


def _save(tmp_path, sd, name="detr-test.pth") -> str:
    path = str(tmp_path / name)
    torch.save({"model": sd}, path)
    return path


def _ours(key: str) -> str:
    return key.replace("backbone.0.", "backbone.", 1).replace(
        "backbone.1.", "position_encoding.", 1
    )


def _images():
    mask = torch.ones(2, 64, 96, dtype=torch.bool)
    mask[1, 32:, :] = False
    return torch.randn(2, 3, 64, 96), mask


def official_sine(pad: torch.Tensor, feats: int = D // 2) -> torch.Tensor:
    """The official PositionEmbeddingSine equations, on a padding mask (True = padding)."""
    not_mask = ~pad
    y = not_mask.cumsum(1, dtype=torch.float32)
    x = not_mask.cumsum(2, dtype=torch.float32)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    dim_t = 10000 ** (2 * (torch.arange(feats) // 2) / feats)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


def official_forward(sd, images, real, pre_norm: bool):
    """An official-style DETR forward built from torchvision and nn.MultiheadAttention parts."""
    resnet = torchvision.models.resnet18(norm_layer=FrozenBatchNorm2d)
    trunk = {k[len("backbone.0.body.") :]: v for k, v in sd.items() if k.startswith("backbone.0.")}
    missing, _ = resnet.load_state_dict(trunk, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"}
    resnet.fc = nn.Identity()
    resnet.avgpool = nn.Identity()
    body = nn.Sequential(*list(resnet.children())[:-2]).eval()
    feat = body(images)
    pad = F.interpolate((~real)[None].float(), size=feat.shape[-2:]).to(torch.bool)[0]
    transformer = RefTransformer(pre_norm, 2, 2, D, 8, FF).eval()
    transformer.load_state_dict({k[12:]: v for k, v in sd.items() if k.startswith("transformer.")})
    src = F.conv2d(feat, sd["input_proj.weight"], sd["input_proj.bias"])
    hs, _ = transformer(src, ~pad, sd["query_embed.weight"], official_sine(pad))
    logits = F.linear(hs[-1], sd["class_embed.weight"], sd["class_embed.bias"])
    box = hs[-1]
    for i in range(3):
        box = F.linear(box, sd[f"bbox_embed.layers.{i}.weight"], sd[f"bbox_embed.layers.{i}.bias"])
        box = box.relu() if i < 2 else box.sigmoid()
    return logits, box


@pytest.mark.parametrize("pre_norm", [False, True])
def test_loaded_model_matches_official_style_forward(tmp_path, pre_norm: bool) -> None:
    sd = random_official_sd(pre_norm=pre_norm)
    model = load_official_detr(_save(tmp_path, sd))
    x, mask = _images()
    out = model(x, mask)
    logits, boxes = official_forward(sd, x, mask, pre_norm)
    torch.testing.assert_close(out["pred_logits"], logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["pred_boxes"], boxes, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("pre_norm", "learned_pos"), [(False, False), (True, True)])
def test_round_trip_every_tensor_and_outputs(tmp_path, pre_norm: bool, learned_pos: bool) -> None:
    sd = random_official_sd(pre_norm=pre_norm, learned_pos=learned_pos)
    model = load_official_detr(_save(tmp_path, sd))
    assert not model.training
    loaded = model.state_dict()
    assert len(loaded) == len(sd)
    for key, value in sd.items():
        assert torch.equal(loaded[_ours(key)], value), key

    twin = build_detr(
        backbone="resnet18", num_classes=C, num_queries=Q, hidden_dim=D, enc_layers=2,
        dec_layers=2, dim_feedforward=FF, pre_norm=pre_norm,
        position_embedding="learned" if learned_pos else "sine",
    ).eval()  # fmt: skip
    twin.load_state_dict({_ours(k): v for k, v in sd.items()})
    x, mask = _images()
    out, expected = model(x, mask), twin(x, mask)
    assert torch.equal(out["pred_logits"], expected["pred_logits"])
    assert torch.equal(out["pred_boxes"], expected["pred_boxes"])


def test_num_classes_change_reinitialises_only_the_class_head(tmp_path) -> None:
    sd = random_official_sd()
    path = _save(tmp_path, sd)
    model = load_official_detr(path, num_classes=3)
    assert model.class_embed.weight.shape == (4, D) and model.num_classes == 3
    loaded = model.state_dict()
    for key, value in sd.items():
        if not key.startswith("class_embed."):
            assert torch.equal(loaded[_ours(key)], value), key

    fresh = build_detr(
        backbone="resnet18", num_classes=3, num_queries=Q, hidden_dim=D, enc_layers=2,
        dec_layers=2, dim_feedforward=FF,
    )  # fmt: skip
    report = load_pretrained_into(fresh, path)
    assert report["reinitialized"] == ["class_embed.bias", "class_embed.weight"]
    assert report["checkpoint_num_classes"] == C and report["model_num_classes"] == 3
    assert set(report["loaded"]) == {_ours(k) for k in sd if not k.startswith("class_embed.")}
    assert torch.equal(fresh.query_embed.weight, sd["query_embed.weight"])


def test_load_pretrained_into_same_classes_loads_everything(tmp_path) -> None:
    sd = random_official_sd()
    model = build_detr(
        backbone="resnet18", num_classes=C, num_queries=Q, hidden_dim=D, enc_layers=2,
        dec_layers=2, dim_feedforward=FF,
    )  # fmt: skip
    report = load_pretrained_into(model, _save(tmp_path, sd))
    assert report["reinitialized"] == [] and len(report["loaded"]) == len(sd)
    assert torch.equal(model.class_embed.weight, sd["class_embed.weight"])


def test_unmatched_and_missing_keys_are_listed(tmp_path) -> None:
    sd = random_official_sd()
    sd["transformer.extra.weight"] = torch.zeros(1)
    del sd["transformer.decoder.layers.1.norm3.bias"]
    path = _save(tmp_path, sd)
    with pytest.raises(ValueError) as info:
        load_official_detr(path)
    message = str(info.value)
    assert path in message and "transformer.extra.weight" in message
    assert "transformer.decoder.layers.1.norm3.bias" in message


def test_shape_mismatch_is_an_error(tmp_path) -> None:
    path = _save(tmp_path, random_official_sd())
    model = build_detr(
        backbone="resnet18", num_classes=C, num_queries=Q + 1, hidden_dim=D, enc_layers=2,
        dec_layers=2, dim_feedforward=FF,
    )  # fmt: skip
    with pytest.raises(ValueError, match="query_embed.weight"):
        load_pretrained_into(model, path)


def test_missing_file_and_masks(tmp_path) -> None:
    path = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_official_detr(path)
    # masks=True (a panoptic release) is implemented: a missing file is still named.
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_official_detr(path, masks=True)
    # A detection release has no mask head: the error names the panoptic release to use.
    detection = _save(tmp_path, random_official_sd())
    with pytest.raises(ValueError, match="panoptic"):
        load_official_detr(detection, masks=True)


def test_pickled_objects_are_refused_with_a_fix(tmp_path) -> None:
    path = str(tmp_path / "train-ckpt.pth")
    torch.save({"model": random_official_sd(), "args": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_official_detr(path)


@pytest.mark.parametrize(
    ("resnet", "enc", "dec"),
    [("resnet18", 0, 1), ("resnet34", 1, 2), ("resnet50", 6, 6), ("resnet101", 6, 6)],
)
def test_architecture_inference_from_keys(resnet: str, enc: int, dec: int) -> None:
    shapes = official_shapes(resnet="resnet18", enc=enc, dec=dec)
    trunk = getattr(torchvision.models, resnet)(norm_layer=FrozenBatchNorm2d).state_dict()
    sd = {k: torch.empty(s) for k, s in shapes.items() if not k.startswith("backbone.")}
    sd.update({f"backbone.0.body.{k}": torch.empty(0) for k in trunk if "fc." not in k})
    cfg = infer_official_config(sd)
    assert cfg["backbone"] == resnet
    assert (cfg["enc_layers"], cfg["dec_layers"]) == (enc, dec)
    assert (cfg["num_classes"], cfg["num_queries"], cfg["hidden_dim"]) == (C, Q, D)
    assert cfg["dim_feedforward"] == FF and cfg["pre_norm"] is False
    assert cfg["position_embedding"] == "sine"


def test_truncated_release_is_named(tmp_path) -> None:
    good = tmp_path / "good.pth"
    torch.save({"model": {"class_embed.weight": torch.zeros(3, 4)}}, good)
    bad = tmp_path / "detr-r50-truncated.pth"
    bad.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ValueError, match="detr-r50-truncated.pth.*truncated"):
        load_official_detr(bad)


def test_key_conversion_also_under_a_panoptic_files_detr_prefix() -> None:
    value = torch.zeros(1)
    official = {"backbone.0.body.conv1.weight": value, "backbone.1.row_embed.weight": value,
                "detr.backbone.0.body.conv1.weight": value, "detr.query_embed.weight": value,
                "bbox_attention.q_linear.weight": value}  # fmt: skip
    assert list(convert_official_state_dict(official)) == [
        "backbone.body.conv1.weight", "position_encoding.row_embed.weight",
        "detr.backbone.body.conv1.weight", "detr.query_embed.weight",
        "bbox_attention.q_linear.weight",
    ]  # fmt: skip
