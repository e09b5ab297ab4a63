"""The sigmoid class scorings against hand-computed values and torchvision's focal loss."""

import math

import pytest
import torch
from torch import nn
from torchvision.ops import sigmoid_focal_loss

from detr_lightning.convergence.focal_scoring import FocalScoring, VarifocalScoring
from detr_lightning.detr.matched_pairs import MatchedPairs


def _pairs(matches: list, target_counts: list[int]) -> MatchedPairs:
    """MatchedPairs of per-set, per-image ([queries], [targets]) lists."""
    as_tensors = [
        [(torch.tensor(q, dtype=torch.int64), torch.tensor(t, dtype=torch.int64)) for q, t in s]
        for s in matches
    ]
    return MatchedPairs.of(as_tensors, target_counts, torch.device("cpu"))


def _focal(x: float, t: int, a: float = 0.25) -> float:
    p = 1 / (1 + math.exp(-x))
    pt = p if t else 1 - p
    return -(a if t else 1 - a) * (1 - pt) ** 2 * math.log(pt)


def test_focal_loss_by_hand() -> None:
    # One logit per class: the matched query's class-0 logit has target 1, all others 0.
    logits = torch.tensor([[[0.0, 1.0]]])
    pairs = _pairs([[([0], [0])]], [1])
    out = FocalScoring().loss(logits[None], pairs, torch.tensor([0]), torch.tensor(2.0),
                              torch.ones(3), None)  # fmt: skip
    assert out.item() == pytest.approx((_focal(0.0, 1) + _focal(1.0, 0)) / 2, rel=1e-6)


def test_stacked_sets_equal_torchvision_focal_loss_of_each_set() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 2, 4, 2, generator=gen)  # [L, B, Q, C]
    labels_per_image = [torch.tensor([1, 0]), torch.tensor([1])]
    matches = [[([0, 3], [1, 0]), ([2], [0])], [([1], [0]), ([0], [0])], [([], []), ([], [])]]
    pairs = _pairs(matches, [2, 1])
    labels = torch.cat(labels_per_image)[pairs.target]
    out = FocalScoring().loss(logits, pairs, labels, torch.tensor(3.0), torch.ones(3), None)
    for layer, per_image in enumerate(matches):
        onehot = torch.zeros(2, 4, 2)
        for b, (queries, tgts) in enumerate(per_image):
            for q, t in zip(queries, tgts, strict=True):
                onehot[b, q, int(labels_per_image[b][t])] = 1.0
        expected = sigmoid_focal_loss(logits[layer], onehot, reduction="sum") / 3
        assert out[layer].item() == pytest.approx(expected.item(), rel=1e-6)


def test_match_cost_by_hand() -> None:
    logits = torch.tensor([[0.5, -1.0], [2.0, 0.0]])  # [Q=2, C=2]
    cost = FocalScoring(alpha=0.3, gamma=1.5).match_cost(logits, torch.tensor([1, 0, 1]))

    def expected(x: float) -> float:
        p = 1 / (1 + math.exp(-x))
        return 0.3 * (1 - p) ** 1.5 * -math.log(p) - 0.7 * p**1.5 * -math.log(1 - p)

    want = [[expected(float(logits[q, c])) for c in (1, 0, 1)] for q in range(2)]
    assert cost.tolist() == [pytest.approx(row, rel=1e-5) for row in want]


def test_objects_probabilities_and_demotion() -> None:
    scoring = FocalScoring()
    # a query is an object when its best probability is > 0.5 (logit > 0)
    logits = torch.tensor([[[0.5, -3.0], [-1.0, -0.1]]])
    assert scoring.is_object(logits).tolist() == [[True, False]]
    assert scoring.num_logits(7) == 7 and not scoring.no_object
    torch.testing.assert_close(scoring.probabilities(logits), torch.sigmoid(logits))
    demoted = scoring.demote(logits, torch.tensor([[[2.0], [0.0]]]))
    torch.testing.assert_close(demoted, torch.tensor([[[-1.5, -5.0], [-1.0, -0.1]]]))


def test_class_head_starts_at_the_prior() -> None:
    head = nn.Linear(4, 3)
    FocalScoring(prior_prob=0.2).init_class_head(head)
    torch.testing.assert_close(torch.sigmoid(head.bias), torch.full((3,), 0.2))
    with pytest.raises(ValueError, match="prior_prob"):
        FocalScoring(prior_prob=1.0)


def test_varifocal_needs_boxes_and_equals_focal_without_matches() -> None:
    assert VarifocalScoring.needs_matched_boxes and not FocalScoring.needs_matched_boxes
    logits = torch.randn(1, 1, 3, 2, generator=torch.Generator().manual_seed(0))
    empty = _pairs([[([], [])]], [0])
    no_boxes = (torch.zeros(0, 4), torch.zeros(0, 4))
    args = (logits, empty, torch.zeros(0, dtype=torch.int64), torch.tensor(3.0), torch.ones(3))
    torch.testing.assert_close(
        VarifocalScoring().loss(*args, no_boxes), FocalScoring().loss(*args, None)
    )


def test_a_probability_of_exactly_one_half_is_not_an_object() -> None:
    # "above 0.5": logit 0 (p = 0.5) is not an object, the smallest float above it is
    logits = torch.tensor([[[0.0, -1.0], [-2.0, 1e-6]]])
    assert FocalScoring().is_object(logits).tolist() == [[False, True]]


def test_a_prior_of_zero_is_refused_like_one() -> None:
    with pytest.raises(ValueError, match="prior_prob=0.0"):
        FocalScoring(prior_prob=0.0)
