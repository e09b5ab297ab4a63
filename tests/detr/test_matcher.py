"""HungarianMatcher: optimality against brute force, with the cost recomputed independently."""

import itertools
import math

import pytest
import torch

from detr_lightning.convergence.focal_scoring import FocalScoring
from detr_lightning.loss import HungarianMatcher


def _giou_cxcywh(a, b):
    """GIoU of two cxcywh boxes, written out by hand (no torchvision)."""
    ax0, ay0, ax1, ay1 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx0, by0, bx1, by1 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
    hull = (max(ax1, bx1) - min(ax0, bx0)) * (max(ay1, by1) - min(ay0, by0))
    return inter / union - (hull - union) / hull


def _pair_cost(logits, box, label, tbox, w_cls, w_box, w_giou, focal, alpha=0.25, gamma=2.0):
    """Matching cost of one (query, target) pair from the documented formula, in plain math."""
    if focal:
        p = 1 / (1 + math.exp(-logits[label]))
        pos = alpha * (1 - p) ** gamma * -math.log(p)
        neg = (1 - alpha) * p**gamma * -math.log(1 - p)
        cls = pos - neg
    else:
        exps = [math.exp(v) for v in logits]
        cls = -exps[label] / sum(exps)
    l1 = sum(abs(x - y) for x, y in zip(box, tbox, strict=True))
    return w_cls * cls + w_box * l1 - w_giou * _giou_cxcywh(box, tbox)


def _random_image(gen, num_queries, num_targets, num_logits, num_classes):
    logits = torch.randn(num_queries, num_logits, generator=gen) * 2
    boxes = torch.rand(num_queries, 4, generator=gen) * 0.5 + torch.tensor([0.25, 0.25, 0.05, 0.05])
    labels = torch.randint(0, num_classes, (num_targets,), generator=gen)
    tboxes = torch.rand(num_targets, 4, generator=gen) * 0.5 + torch.tensor(
        [0.25, 0.25, 0.05, 0.05]
    )
    return logits, boxes, {"labels": labels, "boxes": tboxes}


@pytest.mark.parametrize("focal", [False, True])
@pytest.mark.parametrize(
    ("num_queries", "num_targets", "weights"),
    [(4, 4, (1, 5, 2)), (5, 3, (1, 5, 2)), (6, 2, (2, 1, 0)), (5, 5, (0, 0, 1)), (6, 4, (1, 0, 3))],
)
def test_matches_brute_force_optimum(num_queries, num_targets, weights, focal):
    gen = torch.Generator().manual_seed(num_queries * 10 + num_targets + int(focal))
    num_classes = 3
    matcher = HungarianMatcher(*weights, scoring=FocalScoring() if focal else None)
    for _ in range(3):
        logits, boxes, tgt = _random_image(
            gen, num_queries, num_targets, num_classes + (0 if focal else 1), num_classes
        )
        out = {"pred_logits": logits[None], "pred_boxes": boxes[None]}
        ((pred_idx, tgt_idx),) = matcher(out, [tgt])
        cost = [
            [
                _pair_cost(
                    logits[q].tolist(),
                    boxes[q].tolist(),
                    int(tgt["labels"][t]),
                    tgt["boxes"][t].tolist(),
                    *weights,
                    focal,
                )
                for t in range(num_targets)
            ]
            for q in range(num_queries)
        ]
        # every injective assignment target t -> query perm[t]
        best = min(
            itertools.permutations(range(num_queries), num_targets),
            key=lambda perm: sum(cost[q][t] for t, q in enumerate(perm)),
        )
        best_cost = sum(cost[q][t] for t, q in enumerate(best))
        got_cost = sum(cost[q][t] for q, t in zip(pred_idx.tolist(), tgt_idx.tolist(), strict=True))
        assert got_cost == pytest.approx(best_cost, abs=1e-5)
        expected = sorted((q, t) for t, q in enumerate(best))
        assert list(zip(pred_idx.tolist(), tgt_idx.tolist(), strict=True)) == expected


def test_cost_matrix_equals_hand_formula():
    gen = torch.Generator().manual_seed(0)
    logits, boxes, tgt = _random_image(gen, 5, 3, 4, 3)
    matcher = HungarianMatcher(1.0, 5.0, 2.0)
    cost = matcher.cost_matrix(logits, boxes, tgt["labels"], tgt["boxes"])
    for q in range(5):
        for t in range(3):
            expected = _pair_cost(
                logits[q].tolist(),
                boxes[q].tolist(),
                int(tgt["labels"][t]),
                tgt["boxes"][t].tolist(),
                1.0,
                5.0,
                2.0,
                False,
            )
            assert cost[q, t].item() == pytest.approx(expected, abs=1e-5)


def test_batched_equals_per_image():
    gen = torch.Generator().manual_seed(1)
    images = [_random_image(gen, 10, t, 6, 5) for t in (3, 0, 10, 1)]
    out = {
        "pred_logits": torch.stack([i[0] for i in images]),
        "pred_boxes": torch.stack([i[1] for i in images]),
    }
    batched = HungarianMatcher()(out, [i[2] for i in images])
    for (logits, boxes, tgt), (pred_idx, tgt_idx) in zip(images, batched, strict=True):
        ((p1, t1),) = HungarianMatcher()(
            {"pred_logits": logits[None], "pred_boxes": boxes[None]}, [tgt]
        )
        assert torch.equal(pred_idx, p1) and torch.equal(tgt_idx, t1)
        num_targets = len(tgt["labels"])
        assert pred_idx.dtype == tgt_idx.dtype == torch.int64
        assert len(pred_idx) == num_targets
        assert torch.equal(pred_idx, pred_idx.sort().values)
        assert len(set(pred_idx.tolist())) == num_targets
        assert sorted(tgt_idx.tolist()) == list(range(num_targets))


@pytest.mark.parametrize("focal", [False, True])
def test_all_layers_at_once_equal_each_layer_alone(focal):
    """match_layers builds one cost block per image for every layer; its assignments must be
    those of matching each layer on its own (itself checked against brute force above)."""
    gen = torch.Generator().manual_seed(2)
    num_logits = 5 if focal else 6
    layers = []
    for _ in range(4):
        images = [_random_image(gen, 8, t, num_logits, 5) for t in (3, 0, 8)]
        layers.append(
            {
                "pred_logits": torch.stack([i[0] for i in images]),
                "pred_boxes": torch.stack([i[1] for i in images]),
            }
        )
    targets = [i[2] for i in images]  # any targets: the same for every layer
    matcher = HungarianMatcher(scoring=FocalScoring() if focal else None)
    together = matcher.match_layers(layers, targets)
    assert len(together) == len(layers)
    for out, per_image in zip(layers, together, strict=True):
        alone = matcher(out, targets)
        for (p1, t1), (p2, t2) in zip(per_image, alone, strict=True):
            assert torch.equal(p1, p2) and torch.equal(t1, t2)


def test_empty_targets_give_empty_int64():
    out = {"pred_logits": torch.randn(2, 4, 3), "pred_boxes": torch.rand(2, 4, 4)}
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    for pred_idx, tgt_idx in HungarianMatcher()(out, [empty, empty]):
        assert pred_idx.shape == tgt_idx.shape == (0,)
        assert pred_idx.dtype == tgt_idx.dtype == torch.int64


def test_hand_computed_swap():
    # query 0 sits on target 1 and query 1 on target 0: the matcher must cross them over
    logits = torch.tensor([[[0.0, 5.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])
    boxes = torch.tensor([[[0.7, 0.7, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2], [0.5, 0.5, 0.9, 0.9]]])
    tgt = {
        "labels": torch.tensor([0, 1]),
        "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]]),
    }
    ((pred_idx, tgt_idx),) = HungarianMatcher()({"pred_logits": logits, "pred_boxes": boxes}, [tgt])
    assert pred_idx.tolist() == [0, 1] and tgt_idx.tolist() == [1, 0]


def test_more_targets_than_queries_is_a_clear_error():
    out = {"pred_logits": torch.randn(1, 2, 3), "pred_boxes": torch.rand(1, 2, 4)}
    tgt = {"labels": torch.zeros(3, dtype=torch.int64), "boxes": torch.rand(3, 4)}
    with pytest.raises(ValueError, match="num_queries"):
        HungarianMatcher()(out, [tgt])


def test_label_out_of_range_and_nan_are_clear_errors():
    out = {"pred_logits": torch.randn(1, 3, 3), "pred_boxes": torch.rand(1, 3, 4) * 0.5 + 0.2}
    bad = {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    with pytest.raises(ValueError, match="num_classes"):
        HungarianMatcher()(out, [bad])  # index 2 is no-object with 2 real classes
    out["pred_boxes"][0, 1, 0] = float("nan")
    good = {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    with pytest.raises(ValueError, match="NaN"):
        HungarianMatcher()(out, [good])
    with pytest.raises(ValueError, match="all 0"):
        HungarianMatcher(0, 0, 0)


def test_label_out_of_range_of_a_sigmoid_head_is_the_clear_error() -> None:
    """A focal (sigmoid) head has no "no object" column: label C is out of range, and must give
    the num_classes message, not an IndexError (a device fault on GPU) from the cost."""
    out = {"pred_logits": torch.randn(1, 3, 2), "pred_boxes": torch.rand(1, 3, 4) * 0.5 + 0.2}
    bad = {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    with pytest.raises(ValueError, match="num_classes"):
        HungarianMatcher(scoring=FocalScoring())(out, [bad])


def test_no_grad_and_device_of_outputs():
    logits = torch.randn(1, 4, 3, requires_grad=True)
    boxes = (torch.rand(1, 4, 4) * 0.5 + 0.2).requires_grad_()
    tgt = {"labels": torch.tensor([0, 1]), "boxes": torch.rand(2, 4) * 0.5 + 0.2}
    ((pred_idx, tgt_idx),) = HungarianMatcher()({"pred_logits": logits, "pred_boxes": boxes}, [tgt])
    assert not pred_idx.requires_grad and pred_idx.device == logits.device


def test_the_default_cost_is_the_papers_weighting() -> None:
    """HungarianMatcher() with no arguments: 1 x class + 5 x L1 + 2 x (-GIoU), recomputed with
    torchvision."""
    from torchvision.ops import box_convert, generalized_box_iou

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=gen)
    boxes = torch.rand(6, 4, generator=gen) * 0.4 + 0.1
    labels = torch.tensor([0, 2])
    tgt = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.5, 0.3, 0.4]])
    xyxy = box_convert(boxes, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy")
    want = (-logits.softmax(-1)[:, labels] + 5 * torch.cdist(boxes, tgt, p=1)
            - 2 * generalized_box_iou(*xyxy))  # fmt: skip
    torch.testing.assert_close(HungarianMatcher().cost_matrix(logits, boxes, labels, tgt), want)
