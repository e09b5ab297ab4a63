"""The paper's class scoring: softmax over the classes and "no object", by hand."""

import math

import pytest
import torch
from torch import nn

from detr_lightning.detr.class_scoring import SoftmaxScoring, scoring_of


def test_probabilities_cost_and_objects_leave_no_object_out() -> None:
    scoring = SoftmaxScoring()
    logits = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 1.0]])  # [Q=2, C+1=3]
    z0, z1 = math.exp(1) + 1 + math.exp(2), 1 + math.exp(3) + math.exp(1)
    probs = [[math.exp(1) / z0, 1 / z0], [1 / z1, math.exp(3) / z1]]
    assert scoring.probabilities(logits).tolist() == [pytest.approx(r) for r in probs]
    cost = scoring.match_cost(logits, torch.tensor([1, 0]))
    assert cost.tolist() == [pytest.approx([-probs[0][1], -probs[0][0]]),
                             pytest.approx([-probs[1][1], -probs[1][0]])]  # fmt: skip
    assert scoring.is_object(logits).tolist() == [False, True]  # query 0's argmax: no object
    assert scoring.num_logits(4) == 5 and scoring.no_object


def test_detections_keep_the_best_real_class_per_query() -> None:
    logits = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 3.0, 1.0], [0.5, 0.2, 0.0]]])
    scores, labels, query = SoftmaxScoring().detections(logits, None)
    assert labels.tolist() == [[0, 1, 0]] and query.tolist() == [[0, 1, 2]]
    top_scores, top_labels, top_query = SoftmaxScoring().detections(logits, 2)
    order = scores[0].argsort(descending=True)[:2]
    assert top_query[0].tolist() == order.tolist()
    assert top_labels[0].tolist() == labels[0, order].tolist()
    torch.testing.assert_close(top_scores[0], scores[0, order])


def test_demotion_raises_the_no_object_column_and_init_is_torchs() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    out = SoftmaxScoring().demote(logits, torch.tensor([[3.0]]))
    assert out.tolist() == [[1.0, 2.0, 3.5]]
    head = nn.Linear(4, 3)
    before = head.bias.clone()
    SoftmaxScoring().init_class_head(head)
    torch.testing.assert_close(head.bias, before)


def test_a_part_without_a_scoring_reads_as_the_papers() -> None:
    assert isinstance(scoring_of(nn.Linear(1, 1)), SoftmaxScoring)
    assert scoring_of(None).num_logits(2) == 3
