"""The criterion's loss terms against hand-computed values."""

import math

import pytest
import torch
from torchvision.ops import box_iou

from detr_lightning.detr.class_scoring import SoftmaxScoring, softmax_class_loss
from detr_lightning.detr.loss_terms import (
    box_losses,
    cardinality_error,
    class_error,
    giou_loss,
    paired_inter_union,
)
from detr_lightning.detr.matched_pairs import MatchedPairs


def _pairs(matches: list, target_counts: list[int]) -> MatchedPairs:
    """MatchedPairs of per-set, per-image ([queries], [targets]) lists."""
    as_tensors = [
        [(torch.tensor(q, dtype=torch.int64), torch.tensor(t, dtype=torch.int64)) for q, t in m]
        for m in matches
    ]
    return MatchedPairs.of(as_tensors, target_counts, torch.device("cpu"))


def test_box_losses_by_hand() -> None:
    # Prediction [0, 0, 0.4, 0.4] xyxy, target [0.2, 0.2, 0.6, 0.6]: intersection 0.04, union
    # 0.28, enclosing box 0.36 -> GIoU = 0.04/0.28 - (0.36 - 0.28)/0.36.
    src = torch.tensor([[0.2, 0.2, 0.4, 0.4]])  # cxcywh
    tgt = torch.tensor([[0.4, 0.4, 0.4, 0.4]])
    out = box_losses(src, tgt, [1], torch.tensor(2.0))
    assert out["loss_bbox"].shape == (1,)
    assert out["loss_bbox"].item() == pytest.approx((0.2 + 0.2) / 2)
    giou = 0.04 / 0.28 - (0.36 - 0.28) / 0.36
    assert out["loss_giou"].item() == pytest.approx((1 - giou) / 2, rel=1e-5)


def test_softmax_label_loss_weights_no_object() -> None:
    # 1 image, 2 queries, 1 class + "no object"; query 0 matched to class 0, query 1 unmatched.
    logits = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    weight = torch.tensor([1.0, 0.1])
    pairs = _pairs([[([0], [0])]], [1])
    out = softmax_class_loss(logits[None], pairs, torch.tensor([0]), weight)
    ce0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    ce1 = -math.log(math.exp(1) / (math.exp(1) + 1))
    assert out.shape == (1,)
    assert out.item() == pytest.approx((1.0 * ce0 + 0.1 * ce1) / 1.1, rel=1e-6)
    assert class_error(logits[0, :1], torch.tensor([0])).item() == 0.0
    assert class_error(logits[0, 1:], torch.tensor([0])).item() == 100.0
    assert class_error(logits[0, :0], torch.tensor([], dtype=torch.int64)).item() == 100.0


def test_cardinality_error_counts_predicted_objects() -> None:
    # softmax: image 0 predicts 2 objects (argmax != last) for 1 target, image 1 none for 2.
    logits = torch.tensor([[[3.0, 0.0], [2.0, 1.0]], [[0.0, 1.0], [0.0, 5.0]]])
    targets = [{"labels": torch.tensor([0])}, {"labels": torch.tensor([0, 0])}]
    is_object = SoftmaxScoring().is_object
    assert cardinality_error(is_object(logits), targets).item() == pytest.approx(1.5)
    # a stack of sets gives one error per set
    stacked = cardinality_error(is_object(torch.stack([logits, logits.flip(-1)])), targets)
    # flipped: image 0 predicts nothing for 1 target, image 1 two objects for 2 -> (1 + 0) / 2
    assert stacked.tolist() == pytest.approx([1.5, 0.5])


def test_stacked_sets_equal_pytorch_losses_of_each_set_alone() -> None:
    """Three sets with different matchings and pair counts (3, 2, 0): each entry of the
    stacked losses equals PyTorch's / torchvision's loss of that set computed on its own."""
    from torchvision.ops import generalized_box_iou_loss

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 2, 4, 3, generator=gen)  # [L, B, Q, K]: 2 classes + no object
    boxes = torch.rand(3, 2, 4, 4, generator=gen) * 0.4 + 0.3
    labels_per_image = [torch.tensor([1, 0]), torch.tensor([1])]
    tgt_boxes = torch.rand(3, 4, generator=gen) * 0.4 + 0.3  # images' targets concatenated
    matches = [[([0, 3], [1, 0]), ([2], [0])], [([1], [0]), ([0], [0])], [([], []), ([], [])]]
    pairs = _pairs(matches, [2, 1])
    labels = torch.cat(labels_per_image)[pairs.target]
    weight = torch.tensor([1.0, 1.0, 0.1])
    num_boxes = torch.tensor(3.0)
    ce = softmax_class_loss(logits, pairs, labels, weight)
    src = boxes[pairs.layer, pairs.batch, pairs.query]
    box = box_losses(src, tgt_boxes[pairs.target], pairs.sizes, num_boxes)
    for layer, per_image in enumerate(matches):
        target = torch.full((2, 4), 2)
        src_l, tgt_l = [], []
        for b, (queries, tgts) in enumerate(per_image):
            for q, t in zip(queries, tgts, strict=True):
                label = int(labels_per_image[b][t])
                target[b, q] = label
                src_l.append(boxes[layer, b, q])
                tgt_l.append(tgt_boxes[t + (2 if b else 0)])
        expected_ce = torch.nn.functional.cross_entropy(
            logits[layer].transpose(1, 2), target, weight
        )
        assert ce[layer].item() == pytest.approx(expected_ce.item(), rel=1e-6)
        if not src_l:
            assert box["loss_bbox"][layer].item() == box["loss_giou"][layer].item() == 0.0
            continue
        s, t = torch.stack(src_l), torch.stack(tgt_l)
        assert box["loss_bbox"][layer].item() == pytest.approx((s - t).abs().sum().item() / 3)
        xyxy = [torch.cat([x[:, :2] - x[:, 2:] / 2, x[:, :2] + x[:, 2:] / 2], 1) for x in (s, t)]
        giou = generalized_box_iou_loss(*xyxy, reduction="sum") / 3
        assert box["loss_giou"][layer].item() == pytest.approx(giou.item(), rel=1e-5)


def _random_xyxy(n: int, gen: torch.Generator) -> torch.Tensor:
    lo = torch.rand(n, 2, generator=gen, dtype=torch.float64)
    return torch.cat([lo, lo + torch.rand(n, 2, generator=gen, dtype=torch.float64) * 0.5], 1)


def test_paired_inter_union_is_box_ious_diagonal_and_broadcasts() -> None:
    """Row i with row i only, as the diagonal of torchvision's all-pairs box_iou; leading
    dimensions broadcast (the conv proposals' box vote compares [B, 9, h, w] neighbours with
    [B, 1, h, w] centres)."""
    g = torch.Generator().manual_seed(0)
    lo = torch.rand(6, 2, generator=g)
    src = torch.cat([lo, lo + torch.rand(6, 2, generator=g)], 1)
    lo = torch.rand(6, 2, generator=g)
    tgt = torch.cat([lo, lo + torch.rand(6, 2, generator=g)], 1)
    inter, union = paired_inter_union(src, tgt)
    assert torch.allclose(inter / union, box_iou(src, tgt).diagonal(), atol=1e-6)
    grid = src.view(2, 3, 1, 4)  # [2, 3, 1, 4] against [1, 1, 6, 4]
    inter, union = paired_inter_union(grid, tgt.view(1, 1, 6, 4))
    assert inter.shape == (2, 3, 6)
    assert torch.allclose(inter / union, box_iou(src, tgt).view(2, 3, 6), atol=1e-6)


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
    ours = giou_loss(ours_src, tgt)
    ref = generalized_box_iou_loss(ref_src, tgt, reduction="none")
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    ours.sum().backward(), ref.sum().backward()
    torch.testing.assert_close(ours_src.grad, ref_src.grad, rtol=1e-12, atol=1e-12)


def test_box_losses_never_sync_with_the_host() -> None:
    """No aten::nonzero or aten::item (device syncs on GPUs) in the box losses' forward and
    backward."""
    from torch.profiler import ProfilerActivity, profile

    gen = torch.Generator().manual_seed(1)
    src = torch.rand(16, 4, generator=gen).mul(0.5).add(0.25).requires_grad_()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        tgt = torch.rand(16, 4, generator=gen) * 0.5 + 0.25
        losses = box_losses(src, tgt, [8, 8], torch.tensor(8.0))
        (losses["loss_bbox"] + losses["loss_giou"]).sum().backward()
    names = {event.name for event in prof.events()}
    assert "aten::l1_loss" in names or "aten::abs" in names  # the profile saw the losses
    assert not {"aten::nonzero", "aten::item"} & names


def test_class_error_is_the_percentage_of_wrong_matches() -> None:
    # by hand: 3 matched pairs, 2 argmaxes right -> 1 wrong in 3 = 100/3 %
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    assert class_error(logits, labels).item() == pytest.approx(100 / 3, rel=1e-6)
