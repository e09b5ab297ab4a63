"""The criterion's loss terms against hand-computed values."""

import math

import pytest
import torch

from detr_lightning.detr.loss_terms import (
    box_losses,
    cardinality_error,
    giou_loss_sum,
    label_losses,
)


def test_box_losses_by_hand() -> None:
    # Prediction [0, 0, 0.4, 0.4] xyxy, target [0.2, 0.2, 0.6, 0.6]: intersection 0.04, union
    # 0.28, enclosing box 0.36 -> GIoU = 0.04/0.28 - (0.36 - 0.28)/0.36.
    src = torch.tensor([[0.2, 0.2, 0.4, 0.4]])  # cxcywh
    tgt = torch.tensor([[0.4, 0.4, 0.4, 0.4]])
    out = box_losses(src, tgt, torch.tensor(2.0))
    assert out["loss_bbox"].item() == pytest.approx((0.2 + 0.2) / 2)
    giou = 0.04 / 0.28 - (0.36 - 0.28) / 0.36
    assert out["loss_giou"].item() == pytest.approx((1 - giou) / 2, rel=1e-5)


def test_softmax_label_loss_weights_no_object() -> None:
    # 1 image, 2 queries, 1 class + "no object"; query 0 matched to class 0, query 1 unmatched.
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    weight = torch.tensor([1.0, 0.1])
    out = label_losses(logits, (torch.tensor([0]), torch.tensor([0])), torch.tensor([0]),
                       torch.tensor(1.0), weight)  # fmt: skip
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce1 = -math.log(math.exp(1) / (math.exp(1) + 1))
    assert out["loss_ce"].item() == pytest.approx((1.0 * ce0 + 0.1 * ce1) / 1.1, rel=1e-6)
    assert out["class_error"].item() == 0.0


def test_focal_label_loss_by_hand() -> None:
    # One logit per class: the matched query's class-0 logit has target 1, all others 0.
    logits = torch.tensor([[[0.0, 1.0]]])
    out = label_losses(logits, (torch.tensor([0]), torch.tensor([0])), torch.tensor([0]),
                       torch.tensor(2.0), torch.ones(3), focal=True, log=False)  # fmt: skip

    def focal(x: float, t: int, a: float = 0.25) -> float:
        p = 1 / (1 + math.exp(-x))
        pt = p if t else 1 - p
        return -(a if t else 1 - a) * (1 - pt) ** 2 * math.log(pt)

    assert out["loss_ce"].item() == pytest.approx((focal(0.0, 1) + focal(1.0, 0)) / 2, rel=1e-6)
    assert "class_error" not in out


def test_cardinality_error_counts_predicted_objects() -> None:
    # softmax: image 0 predicts 2 objects (argmax != last) for 1 target, image 1 none for 2.
    logits = torch.tensor([[[3.0, 0.0], [2.0, 1.0]], [[0.0, 1.0], [0.0, 5.0]]])
    targets = [{"labels": torch.tensor([0])}, {"labels": torch.tensor([0, 0])}]
    assert cardinality_error(logits, targets, focal=False).item() == pytest.approx(1.5)
    # focal: a query is an object when its best logit is > 0 (probability > 0.5).
    focal_logits = torch.tensor([[[0.5], [-1.0]], [[-2.0], [-0.1]]])
    assert cardinality_error(focal_logits, targets, focal=True).item() == pytest.approx(1.0)


def _random_xyxy(n: int, gen: torch.Generator) -> torch.Tensor:
    lo = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    return torch.cat([lo, lo + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 0.5], 1)


def test_giou_loss_equals_torchvisions_in_value_and_gradient() -> None:
    """Overlapping, disjoint, nested, touching and zero-area pairs (float64, eps as torchvision)."""
    from torchvision.ops import generalized_box_iou_loss

    gen = torch.Generator().manual_seed(0)
    src, tgt = _random_xyxy(200, gen), _random_xyxy(200, gen)
    special = torch.tensor([[0.1, 0.1, 0.2, 0.2], [0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.4, 0.3],
                            [0.3, 0.3, 0.3, 0.5]], dtype=torch.float64)  # fmt: skip
    partner = torch.tensor([[0.5, 0.5, 0.6, 0.7], [0.2, 0.3, 0.4, 0.5], [0.4, 0.2, 0.6, 0.3],
                            [0.3, 0.3, 0.3, 0.5]], dtype=torch.float64)  # fmt: skip
    src, tgt = torch.cat([src, special]), torch.cat([tgt, partner])
    ours_src, ref_src = src.clone().requires_grad_(), src.clone().requires_grad_()
    ours = giou_loss_sum(ours_src, tgt)
    ref = generalized_box_iou_loss(ref_src, tgt, reduction="sum")
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    ours.backward(), ref.backward()
    torch.testing.assert_close(ours_src.grad, ref_src.grad, rtol=1e-12, atol=1e-12)


def test_box_losses_never_sync_with_the_host() -> None:
    """No aten::nonzero or aten::item (device syncs on GPUs) in the box losses' forward and
    backward."""
    from torch.profiler import ProfilerActivity, profile

    gen = torch.Generator().manual_seed(1)
    src = torch.rand(16, 4, generator=gen).mul(0.5).add(0.25).requires_grad_()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        losses = box_losses(src, torch.rand(16, 4, generator=gen) * 0.5 + 0.25, torch.tensor(16.0))
        (losses["loss_bbox"] + losses["loss_giou"]).backward()
    names = {event.name for event in prof.events()}
    assert "aten::l1_loss" in names or "aten::abs" in names  # the profile saw the losses
    assert not {"aten::nonzero", "aten::item"} & names
