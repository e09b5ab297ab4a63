"""Two-stage query selection: anchors, top-k selection, one-to-many encoder loss, the model."""

import pytest
import torch

from detr_lightning.convergence.model import AcceleratedDETR
from detr_lightning.convergence.proposals import EncoderProposals
from detr_lightning.detr.backbone import Backbone
from detr_lightning.detr.position_encoding import PositionEmbeddingSine
from detr_lightning.detr.transformer import Transformer
from detr_lightning.loss import HungarianMatcher, SetCriterion


def test_anchors_follow_each_images_unpadded_size():
    mask = torch.zeros(2, 2, 4, dtype=torch.bool)
    mask[0] = True  # full 2 x 4 map
    mask[1, :1, :2] = True  # 1 x 2 real cells, rest padding
    head = EncoderProposals(8, 3, focal=True, anchor_cells=2.0)
    cells = head.cells(mask).view(2, 2, 4, 4)
    # One cell of image 1 is half its real width (2 real columns) and all its real height.
    torch.testing.assert_close(cells[1, 0, 1], torch.tensor([0.75, 0.5, 0.5, 1.0]))
    anchors = head.anchors(cells)
    # Image 0: cell (row 1, col 2) centre = ((2 + .5) / 4, (1 + .5) / 2), side = 2 cells.
    torch.testing.assert_close(anchors[0, 1, 2], torch.tensor([0.625, 0.75, 0.5, 1.0]))
    # Image 1: one real row and two real columns; a 2-cell anchor is clamped to the image.
    torch.testing.assert_close(anchors[1, 0, 1], torch.tensor([0.75, 0.5, 1.0, 1.0]))
    assert anchors[1, 0, 3, 0] > 1  # a padded column lies outside the image


def test_fresh_proposals_sit_on_their_anchors():
    torch.manual_seed(0)
    head = EncoderProposals(8, 3, focal=True)
    mask = torch.ones(1, 3, 3, dtype=torch.bool)
    out = head(torch.randn(1, 9, 8), mask)
    torch.testing.assert_close(out["pred_boxes"], head.anchors(head.cells(mask)), atol=1e-4, rtol=0)
    torch.testing.assert_close(out["cells"], head.cells(mask))
    # Focal prior: a feature-free token scores 1 % for every class.
    torch.testing.assert_close(head.class_embed(torch.zeros(8)).sigmoid(), torch.full((3,), 0.01))


@pytest.mark.parametrize("focal", [True, False])
def test_select_takes_the_best_real_tokens(focal):
    head = EncoderProposals(4, 3 if focal else 4, focal=focal)
    logits = torch.full((1, 5, 3 if focal else 4), -5.0)
    if not focal:
        logits[..., -1] = 5.0  # "no object" wins everywhere ...
    logits[0, 1, 2] = 9.0  # ... except token 1 (best) and token 3 (second)
    logits[0, 3, 0] = 7.0
    logits[0, 4, 1] = 20.0  # the best score of all, but token 4 is padding
    boxes = torch.rand(1, 5, 4, requires_grad=True)
    feats = torch.randn(1, 5, 4, requires_grad=True)
    mask = torch.tensor([[[True, True, True, True, False]]])  # [B=1, h=1, w=5]
    ref, content, prior = head.select(
        {"pred_logits": logits, "pred_boxes": boxes, "features": feats}, mask, k=2
    )
    torch.testing.assert_close(ref, boxes[:, [1, 3]].detach())
    torch.testing.assert_close(content, feats[:, [1, 3]].detach())
    torch.testing.assert_close(prior, logits[:, [1, 3]])
    assert not ref.requires_grad and not content.requires_grad
    with pytest.raises(ValueError, match="only 5"):
        head.select({"pred_logits": logits, "pred_boxes": boxes, "features": feats}, mask, 6)


def _criterion(k: int, num_classes: int = 2) -> SetCriterion:
    return SetCriterion(num_classes, HungarianMatcher(focal=True), focal=True, encoder_matches=k)


def test_encoder_loss_matches_every_target_k_times():
    target = {"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2],
                                                                      [0.7, 0.6, 0.3, 0.4]])}  # fmt: skip
    # 10 tokens: 3 exact copies of each target box, 4 far-away boxes.
    boxes = torch.cat([target["boxes"].repeat(3, 1), torch.tensor([[0.05, 0.05, 0.05, 0.05]] * 4)])
    logits = torch.full((10, 2), -8.0)
    logits[torch.arange(6), target["labels"].repeat(3)] = 8.0
    dec = {"pred_logits": torch.zeros(1, 4, 2), "pred_boxes": torch.full((1, 4, 4), 0.5)}
    outputs = {**dec, "enc_outputs": {"pred_logits": logits[None], "pred_boxes": boxes[None]}}
    three = _criterion(3)(outputs, [target])
    assert three["loss_bbox_enc"] == 0 and three["loss_giou_enc"].abs() < 1e-5
    assert three["loss_ce_enc"] < 1e-3
    # Asking for 4 matches per target forces one pair onto a far-away token.
    four = _criterion(4)(outputs, [target])
    assert four["loss_bbox_enc"] > 0.05
    # Without enc_outputs (levers off / eval) the encoder losses vanish.
    assert not any(k.endswith("_enc") for k in _criterion(3)(dec, [target]))


def _model(**kwargs) -> AcceleratedDETR:
    torch.manual_seed(0)
    transformer = Transformer(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=2,
                              dim_feedforward=64, dropout=0.0)  # fmt: skip
    return AcceleratedDETR(
        Backbone("resnet18", norm="bn", last_stage="layer3"), PositionEmbeddingSine(16),
        transformer, num_classes=3, num_queries=6, focal=True, box_refine=True, **kwargs,
    )  # fmt: skip


def test_two_stage_model_trains_the_backbone_through_the_encoder_head():
    model = _model(two_stage=True, denoising={"groups": 2})
    pixel_values = torch.randn(2, 3, 64, 96)
    pixel_mask = torch.ones(2, 64, 96, dtype=torch.bool)
    pixel_mask[1, :, 48:] = False
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}] * 2
    out = model(pixel_values, pixel_mask, targets=targets)
    assert out["enc_outputs"]["pred_logits"].shape == (2, 4 * 6, 3)  # one proposal per token
    assert out["pred_boxes"].shape == (2, 6, 4)
    losses = _criterion(2, num_classes=3)(out, targets)
    assert {"loss_ce_enc", "loss_bbox_enc", "loss_giou_enc", "loss_ce_dn"} <= losses.keys()
    (losses["loss_ce_enc"] + losses["loss_giou_enc"]).backward()
    assert model.backbone.body.get_parameter("layer3.0.conv1.weight").grad.abs().sum() > 0
    model.eval()
    assert "enc_outputs" not in model(pixel_values, pixel_mask)

    with pytest.raises(ValueError, match="box_refine"):
        _model(two_stage=True, query_groups=2)
