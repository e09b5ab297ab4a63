"""The varifocal loss: IoU targets on the matched entries, the focal loss's negatives elsewhere."""

import math

import pytest
import torch
from torchvision.ops import box_convert, box_iou, sigmoid_focal_loss

from detr_lightning.convergence.criterion import ConvergenceCriterion
from detr_lightning.convergence.focal_scoring import FocalScoring, VarifocalScoring
from detr_lightning.convergence.iou_aware_loss import paired_iou, varifocal_loss
from detr_lightning.detr.matched_pairs import MatchedPairs
from detr_lightning.loss import HungarianMatcher


def _pairs(queries: list[int], targets: list[int]) -> MatchedPairs:
    """One set, one image, ``queries[i]`` matched to target ``targets[i]``."""
    match = [[(torch.tensor(queries, dtype=torch.int64), torch.tensor(targets, dtype=torch.int64))]]
    return MatchedPairs.of(match, [max(targets, default=-1) + 1], torch.device("cpu"))


def test_paired_iou_is_the_diagonal_of_box_iou():
    g = torch.Generator().manual_seed(0)
    src = torch.cat([torch.rand(6, 2, generator=g), torch.rand(6, 2, generator=g) * 0.5], 1)
    tgt = torch.cat([torch.rand(6, 2, generator=g), torch.rand(6, 2, generator=g) * 0.5], 1)
    xyxy = box_iou(box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"))
    torch.testing.assert_close(paired_iou(src, tgt), xyxy.diagonal())
    box = torch.tensor([[0.5, 0.5, 0.2, 0.4]])
    torch.testing.assert_close(paired_iou(box, box), torch.tensor([1.0]))
    # Half the width, same centre: IoU 1/2.
    torch.testing.assert_close(paired_iou(box, torch.tensor([[0.5, 0.5, 0.1, 0.4]])),
                               torch.tensor([0.5]))  # fmt: skip


def test_varifocal_loss_by_hand():
    logits = torch.tensor([[[[0.3, -1.2], [2.0, -0.5]]]])  # [L=1, B=1, Q=2, C=2]
    iou, num_boxes = 0.6, torch.tensor(2.0)
    loss = varifocal_loss(logits, _pairs([0], [0]), torch.tensor([1]), torch.tensor([iou]),
                          num_boxes)  # fmt: skip

    def sig(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    def negative(x: float) -> float:  # (1 - alpha) p^gamma * -log(1 - p), alpha 0.25, gamma 2
        return 0.75 * sig(x) ** 2 * -math.log(1 - sig(x))

    p = sig(-1.2)  # query 0, class 1: the matched entry, target and weight = IoU
    matched = iou * -(iou * math.log(p) + (1 - iou) * math.log(1 - p))
    expected = (matched + negative(0.3) + negative(2.0) + negative(-0.5)) / 2.0
    torch.testing.assert_close(loss, torch.tensor([expected]), rtol=1e-6, atol=0)


def test_without_matches_it_is_the_focal_loss():
    logits = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(1))
    empty = MatchedPairs.of([[(torch.zeros(0, dtype=torch.int64),) * 2] * 3] * 2, [0, 0, 0],
                            torch.device("cpu"))  # fmt: skip
    loss = varifocal_loss(logits, empty, torch.zeros(0, dtype=torch.int64), torch.zeros(0),
                          torch.tensor(3.0))  # fmt: skip
    focal = sigmoid_focal_loss(logits, torch.zeros_like(logits), 0.25, 2.0, reduction="none")
    torch.testing.assert_close(loss, focal.flatten(1).sum(1) / 3.0)


def test_a_score_equal_to_its_iou_gets_no_gradient():
    iou = torch.tensor([0.7, 0.4])
    logits = torch.full((1, 1, 3, 2), -3.0)
    logits[0, 0, 0, 1] = math.log(0.7 / 0.3)  # sigmoid = its IoU: the matched term's minimum
    logits[0, 0, 2, 0] = 2.0  # scored above its IoU of 0.4: pushed down
    logits.requires_grad_(True)
    loss = varifocal_loss(logits, _pairs([0, 2], [0, 1]), torch.tensor([1, 0]), iou,
                          torch.tensor(2.0))  # fmt: skip
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert grad[0, 0, 0, 1].abs() < 1e-7
    assert grad[0, 0, 2, 0] > 0
    assert (grad[0, 0, 1] > 0).all()  # an unmatched query's scores fall


def _outputs(boxes: torch.Tensor) -> dict:
    logits = torch.tensor([[[2.0, -1.0], [-1.0, 0.5], [0.0, 0.0]]], requires_grad=True)
    enc = {"pred_logits": logits * 1, "pred_boxes": boxes * 1}
    return {"pred_logits": logits, "pred_boxes": boxes, "enc_outputs": enc}


def test_criterion_scores_every_set_by_iou_and_no_box_gets_its_gradient():
    target = {"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2],
                                                                      [0.7, 0.6, 0.3, 0.4]])}  # fmt: skip
    boxes = torch.tensor([[[0.32, 0.3, 0.2, 0.2], [0.7, 0.6, 0.2, 0.4], [0.1, 0.9, 0.1, 0.1]]])
    boxes.requires_grad_(True)

    def losses(iou_aware: bool) -> dict:
        scoring = VarifocalScoring() if iou_aware else FocalScoring()
        criterion = ConvergenceCriterion(2, HungarianMatcher(scoring=scoring), scoring=scoring)
        return criterion(_outputs(boxes), [target])

    focal, vfl = losses(False), losses(True)
    for key in ("loss_bbox", "loss_giou", "loss_bbox_enc", "loss_giou_enc"):
        torch.testing.assert_close(vfl[key], focal[key])
    for key in ("loss_ce", "loss_ce_enc"):
        assert not torch.isclose(vfl[key], focal[key]), key
    class_losses = vfl["loss_ce"] + vfl["loss_ce_enc"]
    assert torch.autograd.grad(class_losses, boxes, allow_unused=True)[0] is None


def test_the_varifocal_scoring_needs_the_box_losses():
    scoring = VarifocalScoring()
    with pytest.raises(ValueError, match="needs 'boxes'"):
        ConvergenceCriterion(2, HungarianMatcher(scoring=scoring), scoring=scoring,
                             losses=("labels",), weight_dict={"loss_ce": 1.0})  # fmt: skip
