"""The convergence levers: off = the paper's DETR exactly; on = extra training-only outputs."""

import re

import pytest
import torch

from detr_lightning.convergence.box_encoding import box_sine_embedding
from detr_lightning.convergence.model import AcceleratedDETR
from detr_lightning.detr.backbone import Backbone
from detr_lightning.detr.model import DETR
from detr_lightning.detr.position_encoding import PositionEmbeddingSine
from detr_lightning.detr.transformer import Transformer
from detr_lightning.loss import HungarianMatcher, SetCriterion


def _parts(**backbone_kwargs):
    torch.manual_seed(0)
    backbone = Backbone("resnet18", **backbone_kwargs)
    transformer = Transformer(
        d_model=32,
        nhead=4,
        num_encoder_layers=1,
        num_decoder_layers=3,
        dim_feedforward=64,
        dropout=0.0,
    )
    return backbone, PositionEmbeddingSine(16), transformer


def _batch():
    pixel_values = torch.randn(2, 3, 64, 96)
    pixel_mask = torch.ones(2, 64, 96, dtype=torch.bool)
    pixel_mask[1, :, 64:] = False
    targets = [
        {
            "labels": torch.tensor([1, 2]),
            "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.5, 0.3, 0.4]]),
        },
        {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])},
    ]
    return pixel_values, pixel_mask, targets


def test_levers_off_is_the_paper_model():
    plain = DETR(*_parts(), num_classes=3, num_queries=5)
    accelerated = AcceleratedDETR(*_parts(), num_classes=3, num_queries=5)
    # Same parameter names (official checkpoints load) and the same numbers.
    assert plain.state_dict().keys() == accelerated.state_dict().keys()
    accelerated.load_state_dict(plain.state_dict())
    pixel_values, pixel_mask, targets = _batch()
    for mode in ("train", "eval"):
        getattr(plain, mode)()
        getattr(accelerated, mode)()
        expected = plain(pixel_values, pixel_mask)
        got = accelerated(pixel_values, pixel_mask, targets=targets)
        assert got.keys() == expected.keys()
        torch.testing.assert_close(got["pred_logits"], expected["pred_logits"])
        torch.testing.assert_close(got["pred_boxes"], expected["pred_boxes"])


@pytest.mark.parametrize("box_refine", [False, True])
def test_levers_add_training_outputs_and_vanish_at_inference(box_refine):
    model = AcceleratedDETR(
        *_parts(),
        num_classes=3,
        num_queries=5,
        focal=True,
        box_refine=box_refine,
        query_groups=3,
        denoising={"groups": 2},
    )
    pixel_values, pixel_mask, targets = _batch()
    model.train()
    out = model(pixel_values, pixel_mask, targets=targets)
    assert out["pred_logits"].shape == (2, 5, 3)  # focal: no "no object" column
    assert len(out["group_outputs"]) == 2
    assert out["dn_outputs"]["pred_boxes"].shape == (2, 2 * 2, 4)  # 2 dn groups x pad 2
    assert len(out["dn_outputs"]["aux_outputs"]) == 2
    criterion = SetCriterion(3, HungarianMatcher(focal=True), focal=True)
    losses = criterion(out, targets)
    for key in ("loss_ce", "loss_bbox_g1", "loss_giou_g2_1", "loss_ce_dn", "loss_bbox_dn_0"):
        assert torch.isfinite(losses[key]), key
    criterion.weighted_total(losses).backward()
    assert model.label_embed.weight.grad.abs().sum() > 0  # denoising queries are trained

    model.eval()
    out = model(pixel_values, pixel_mask, targets=targets)
    assert set(out) == {"pred_logits", "pred_boxes", "aux_outputs"}
    assert out["pred_boxes"].shape == (2, 5, 4)
    assert 0 <= out["pred_boxes"].min() and out["pred_boxes"].max() <= 1


def test_levers_disabled_losses_vanish():
    model = AcceleratedDETR(*_parts(), num_classes=3, num_queries=5)
    pixel_values, pixel_mask, targets = _batch()
    losses = SetCriterion(3, HungarianMatcher())(model(pixel_values, pixel_mask, targets), targets)
    assert not [k for k in losses if re.search(r"_(dn|g\d+)(_\d+)?$", k)]
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_1"} <= set(losses)


def test_matching_queries_do_not_see_denoising_queries():
    """Changing the ground truth (hence the dn queries) must not move matching predictions."""
    model = AcceleratedDETR(
        *_parts(), num_classes=3, num_queries=5, box_refine=True, denoising={"groups": 3}
    )
    model.train()
    pixel_values, pixel_mask, targets = _batch()
    first = model(pixel_values, pixel_mask, targets=targets)
    moved = [
        {"labels": (t["labels"] + 1) % 3, "boxes": t["boxes"].flip(0).roll(1, -1)} for t in targets
    ]
    second = model(pixel_values, pixel_mask, targets=moved)
    torch.testing.assert_close(first["pred_boxes"], second["pred_boxes"])
    assert not torch.allclose(first["dn_outputs"]["pred_boxes"], second["dn_outputs"]["pred_boxes"])


def test_box_sine_embedding_values():
    emb = box_sine_embedding(torch.tensor([[0.25, 0.5, 0.0, 1.0]]), dim=8)
    # per coordinate 2 features: sin(2*pi*x / 10000**0), cos(2*pi*x / 10000**0)
    expected = torch.tensor([[1.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 1.0]])
    torch.testing.assert_close(emb, expected, atol=1e-6, rtol=0)


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


def test_width_scaled_backbone_keeps_resnet_names_at_a_fraction_of_the_channels():
    full = Backbone("resnet18", norm="bn", last_stage="layer3")
    half = Backbone("resnet18", norm="bn", last_stage="layer3", width=32)
    assert half.num_channels == 128
    full_sd, half_sd = full.body.state_dict(), half.body.state_dict()
    assert full_sd.keys() == half_sd.keys()  # same names: configs and checkpoints line up
    for name, tensor in half_sd.items():
        if tensor.ndim == 4:  # conv weights [out, in, k, k]: input channels stay 3 for the stem
            expected_in = 3 if name == "conv1.weight" else full_sd[name].shape[1] // 2
            assert tensor.shape == (full_sd[name].shape[0] // 2, expected_in, *tensor.shape[2:])
    feats, _ = half(torch.randn(1, 3, 64, 64))[-1]
    assert feats.shape == (1, 128, 4, 4)
    bottleneck = Backbone("resnet50", width=32)
    assert bottleneck.num_channels == 1024
    assert bottleneck(torch.randn(1, 3, 64, 64))[-1][0].shape == (1, 1024, 2, 2)
    with pytest.raises(ValueError, match="width"):
        Backbone("resnet18", pretrained=True, width=32)


def test_box_refine_starts_every_layer_at_its_anchor():
    """Per-layer box heads start at zero, so a fresh model predicts its anchors at every layer."""
    model = AcceleratedDETR(*_parts(), num_classes=3, num_queries=5, focal=True, box_refine=True)
    assert len(model.layer_bbox_embed) == 2  # 3 decoder layers: 2 extra heads + bbox_embed
    model.eval()
    out = model(*_batch()[:2])
    anchors = model.anchor_embed.weight.sigmoid().expand(2, -1, -1)
    for boxes in [out["pred_boxes"], *(aux["pred_boxes"] for aux in out["aux_outputs"])]:
        torch.testing.assert_close(boxes, anchors, atol=1e-4, rtol=0)
