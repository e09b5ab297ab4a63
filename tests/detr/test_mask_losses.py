"""Mask losses (focal, DICE) against hand-computed values, and the criterion's "masks" group."""

import math

import pytest
import torch
from torchvision.ops import sigmoid_focal_loss

from detr_lightning.detr.criterion import SetCriterion
from detr_lightning.detr.mask_losses import (
    dice_loss,
    focal_mask_loss,
    mask_losses,
    pad_target_masks,
)
from detr_lightning.detr.matcher import HungarianMatcher


def _focal(logit: float, target: float, alpha: float = 0.25, gamma: float = 2.0) -> float:
    """One pixel's sigmoid focal loss, from the definition."""
    p = 1 / (1 + math.exp(-logit))
    p_t = p if target else 1 - p
    alpha_t = alpha if target else 1 - alpha
    return -alpha_t * (1 - p_t) ** gamma * math.log(p_t)


def test_focal_and_dice_by_hand() -> None:
    # two masks of 4 pixels; mask 0 predicts its target well, mask 1 badly
    logits = torch.tensor([[3.0, 3.0, -3.0, -3.0], [0.0, -2.0, 2.0, 0.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    per_mask = [
        sum(_focal(lg, t) for lg, t in zip(row, trow, strict=True)) / 4
        for row, trow in zip(logits.tolist(), targets.tolist(), strict=True)
    ]
    assert focal_mask_loss(logits, targets, 2.0).item() == pytest.approx(sum(per_mask) / 2)
    s3, s2 = 1 / (1 + math.exp(-3)), 1 / (1 + math.exp(-2))
    # DICE: 1 - (2 |p t| + 1) / (|p| + |t| + 1), p = sigmoid(logits)
    dice0 = 1 - (2 * 2 * s3 + 1) / ((2 * s3 + 2 * (1 - s3)) + 2 + 1)
    dice1 = 1 - (2 * (0.5 + (1 - s2)) + 1) / ((0.5 + (1 - s2) + s2 + 0.5) + 2 + 1)
    assert dice_loss(logits, targets, 2.0).item() == pytest.approx((dice0 + dice1) / 2, rel=1e-6)


def test_both_losses_are_summed_over_masks_and_divided_by_num_boxes() -> None:
    # num_boxes (the batch's target count, e.g. averaged over DDP ranks) need not be the number
    # of masks here: 2 masks, num_boxes 5 -> the per-mask sums divided by 5, not a mean over 2
    logits = torch.tensor([[30.0, 30.0, -30.0, -30.0], [-30.0, -30.0, 30.0, 30.0]])
    targets = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    # mask 0 exact: DICE 1 - 5/5 = 0; mask 1 disjoint: DICE 1 - 1/(2 + 2 + 1) = 0.8
    assert dice_loss(logits, targets, 5.0).item() == pytest.approx(0.8 / 5, rel=1e-5)
    # mask 1: every p_t ~ e^-30, so focal = alpha_t * 30: 0.25 * 30 twice, 0.75 * 30 twice
    assert focal_mask_loss(logits, targets, 5.0).item() == pytest.approx(15.0 / 5, rel=1e-4)


def test_empty_target_and_empty_prediction_cost_nothing_in_dice() -> None:
    logits = torch.full((1, 9), -30.0)
    assert dice_loss(logits, torch.zeros(1, 9), 1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_predictions_are_upsampled_bilinearly_to_the_target() -> None:
    # 2x2 logits rows (10, -10) -> 4x4 rows 10, 5, -5, -10 (bilinear, align_corners=False)
    pred = torch.tensor([[10.0, 10.0], [-10.0, -10.0]])[None, None]
    target = torch.zeros(1, 4, 4, dtype=torch.bool)
    target[0, :2] = True
    out = mask_losses(pred, (torch.tensor([0]), torch.tensor([0])), [target], 1.0)
    rows, truth = [10.0, 5.0, -5.0, -10.0], [1, 1, 0, 0]
    focal = sum(4 * _focal(r, t) for r, t in zip(rows, truth, strict=True)) / 16
    assert out["loss_mask"].item() == pytest.approx(focal, rel=1e-5)
    p = [1 / (1 + math.exp(-r)) for r in rows]
    dice = 1 - (2 * 4 * (p[0] + p[1]) + 1) / (4 * sum(p) + 8 + 1)
    assert out["loss_dice"].item() == pytest.approx(dice, abs=1e-6)  # 1 - x: float32


def _case():
    """1 image, 2 queries, 1 target (label 1, the left half of a 4x4 image). Query 1 matches
    it (right class and box); query 0 predicts background."""
    logits = torch.tensor([[[0.0, 0.0, 5.0], [0.0, 5.0, 0.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.25, 0.5, 0.5, 1.0]]])
    target_mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    target_mask[0, :, :2] = True
    pred_masks = torch.zeros(1, 2, 2, 2)  # query 1: logit 0 everywhere (p = 0.5)
    pred_masks[0, 0] = 7.0  # query 0's mask would give other losses
    target = {
        "labels": torch.tensor([1]),
        "boxes": torch.tensor([[0.25, 0.5, 0.5, 1.0]]),
        "masks": target_mask,
    }
    aux = {"pred_logits": logits.clone(), "pred_boxes": boxes.clone()}
    outputs = {
        "pred_logits": logits, "pred_boxes": boxes, "pred_masks": pred_masks,
        "aux_outputs": [aux],
    }  # fmt: skip
    return outputs, [target]


def _criterion(**kwargs) -> SetCriterion:
    weights = {"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2, "loss_mask": 1, "loss_dice": 1}
    return SetCriterion(
        2, HungarianMatcher(), losses=["labels", "boxes", "cardinality", "masks"],
        weight_dict=weights, **kwargs,
    )  # fmt: skip


def test_criterion_masks_group_uses_the_matching_and_only_the_last_layer() -> None:
    outputs, targets = _case()
    losses = _criterion()(outputs, targets)
    # matched query 1: p = 0.5 on 16 pixels, 8 of them in the target
    focal = (8 * _focal(0.0, 1) + 8 * _focal(0.0, 0)) / 16
    assert losses["loss_mask"].item() == pytest.approx(focal, rel=1e-6)
    assert losses["loss_dice"].item() == pytest.approx(1 - (2 * 4 + 1) / (8 + 8 + 1), rel=1e-6)
    assert "loss_ce_0" in losses and "loss_mask_0" not in losses and "loss_dice_0" not in losses
    halved = _criterion()(outputs, targets, num_boxes=2.0)
    assert halved["loss_mask"].item() == pytest.approx(focal / 2, rel=1e-6)
    total = _criterion().weighted_total(losses)
    rest = losses["loss_ce"] + 5 * losses["loss_bbox"] + 2 * losses["loss_giou"]
    aux = losses["loss_ce_0"] + 5 * losses["loss_bbox_0"] + 2 * losses["loss_giou_0"]
    expected = rest + aux + losses["loss_mask"] + losses["loss_dice"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_gradient_reaches_only_matched_masks() -> None:
    outputs, targets = _case()
    outputs["pred_masks"].requires_grad_(True)
    losses = _criterion()(outputs, targets)
    (losses["loss_mask"] + losses["loss_dice"]).backward()
    grad = outputs["pred_masks"].grad
    assert (grad[0, 0] == 0).all() and (grad[0, 1] != 0).any()


def test_images_without_targets_and_unpadded_targets() -> None:
    outputs, targets = _case()
    empty = {
        "labels": torch.zeros(0, dtype=torch.long),
        "boxes": torch.zeros(0, 4),
        "masks": torch.zeros(0, 4, 4, dtype=torch.bool),
    }
    zero = _criterion()(outputs, [empty])
    assert zero["loss_mask"].item() == 0 and zero["loss_dice"].item() == 0
    # Two images whose masks were not padded to a common size: zero-padded bottom/right.
    two = {k: torch.cat([v, v]) for k, v in outputs.items() if k.startswith("pred_")}
    small = dict(targets[0], masks=targets[0]["masks"][:, :3, :3])
    losses = _criterion()(two, [targets[0], small])
    assert losses["loss_mask"].isfinite() and losses["loss_dice"].isfinite()


def test_masks_loss_needs_pred_masks() -> None:
    outputs, targets = _case()
    with pytest.raises(ValueError, match="a target has no 'masks'"):
        _criterion()(outputs, [{k: v for k, v in targets[0].items() if k != "masks"}])
    del outputs["pred_masks"]
    with pytest.raises(ValueError, match="pred_masks"):
        _criterion()(outputs, targets)


def test_focal_alpha_weights_positives_by_a_quarter() -> None:
    # by hand: logit 0, target 1: alpha * (1 - 0.5)^2 * ln 2 with alpha = 0.25 (paper/official)
    one = focal_mask_loss(torch.tensor([[0.0]]), torch.tensor([[1.0]]), 1.0)
    assert one.item() == pytest.approx(0.25 * 0.25 * math.log(2), rel=1e-6)
    # asymmetric data against torchvision.ops.sigmoid_focal_loss(alpha=0.25, gamma=2), reduced as
    # documented: mean over pixels, summed over masks, / num_boxes
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 16, generator=gen) * 3
    targets = (torch.rand(3, 16, generator=gen) < 0.2).float()
    ref = sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0, reduction="none")
    expected = ref.mean(1).sum() / 2.0
    assert focal_mask_loss(logits, targets, 2.0).item() == pytest.approx(expected.item(), rel=1e-6)
    out = mask_losses(
        logits.view(1, 3, 4, 4), (torch.zeros(3, dtype=torch.long), torch.arange(3)),
        [targets.view(3, 4, 4).bool()], 2.0,
    )  # fmt: skip
    assert out["loss_mask"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_no_matched_mask_keeps_the_loss_in_the_graph() -> None:
    # DDP needs every parameter in the graph: zero losses that still backpropagate (zero grads)
    pred = torch.randn(1, 3, 2, 2, requires_grad=True)
    none = (torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))
    out = mask_losses(pred, none, [torch.zeros(0, 4, 4, dtype=torch.bool)], 1.0)
    assert out["loss_mask"].requires_grad and out["loss_dice"].requires_grad
    (out["loss_mask"] + out["loss_dice"]).backward()
    assert pred.grad is not None and (pred.grad == 0).all()
    assert out["loss_mask"].item() == 0 and out["loss_dice"].item() == 0


def test_pad_target_masks_pads_bottom_and_right() -> None:
    # by hand: a 2x2 mask on a 4x4 canvas keeps its top-left corner
    padded = pad_target_masks([torch.ones(1, 2, 2), torch.ones(1, 4, 4)])
    expected = torch.zeros(2, 4, 4)
    expected[0, :2, :2] = 1
    expected[1] = 1
    assert torch.equal(padded, expected)
