"""The extra-term extension point of SetCriterion, through its example AspectRatioLoss: a
hand-computed value, every query set gets the term, and weight_dict weighs it."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from detr_lightning.convergence.aspect_loss import AspectRatioLoss
from detr_lightning.detr.criterion import SetCriterion
from detr_lightning.detr.matcher import HungarianMatcher
from detr_lightning.utils import conf_dir


def _outputs(boxes: list[list[float]], aux_boxes: list[list[float]]) -> dict:
    """One image, 2 classes; the last layer's and one aux layer's boxes."""
    logits = torch.zeros(1, len(boxes), 3)
    return {"pred_logits": logits, "pred_boxes": torch.tensor([boxes]),
            "aux_outputs": [{"pred_logits": logits, "pred_boxes": torch.tensor([aux_boxes])}]}  # fmt: skip


def test_hand_computed_loss_on_every_layer_and_weighted_in_the_total() -> None:
    # one target, a 0.2 x 0.1 box (w/h = 2); the matcher picks the query nearest to it
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.1]])}]
    outputs = _outputs([[0.5, 0.5, 0.1, 0.1], [0.9, 0.9, 0.1, 0.4]],
                       [[0.9, 0.9, 0.1, 0.4], [0.5, 0.5, 0.1, 0.2]])  # fmt: skip
    criterion = SetCriterion(2, HungarianMatcher(), extra_terms={"aspect": AspectRatioLoss()},
                             weight_dict={"loss_ce": 1.0, "loss_aspect": 3.0})  # fmt: skip
    losses = criterion(outputs, targets)
    # last layer: query 0 (w/h = 1) -> |log 1 - log 2|; aux layer: query 1 (w/h = 0.5) is the
    # near one -> |log 0.5 - log 2| = log 4
    assert losses["loss_aspect"].item() == pytest.approx(math.log(2))
    assert losses["loss_aspect_0"].item() == pytest.approx(math.log(4))
    total = criterion.weighted_total(losses)
    expected = sum(losses[k] for k in ("loss_ce", "loss_ce_0")) + 3.0 * (
        losses["loss_aspect"] + losses["loss_aspect_0"]
    )
    assert total.item() == pytest.approx(expected.item())


def test_a_weight_without_its_term_is_refused() -> None:
    with pytest.raises(ValueError, match=r"weight_dict has \['loss_aspect'\].*extra term"):
        SetCriterion(2, HungarianMatcher(), weight_dict={"loss_ce": 1.0, "loss_aspect": 1.0})


def test_the_config_group_plugs_the_term_into_the_shapes_criterion() -> None:
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=shapes", "loss_term=aspect"])
    with open_dict(cfg):
        cfg.model.criterion.num_classes = 5
    criterion = instantiate(cfg.model.criterion, _convert_="all")
    assert isinstance(criterion.extra_terms["aspect"], AspectRatioLoss)
    assert criterion.weight_dict["loss_aspect"] == 1.0
    assert criterion.weight_dict["loss_giou"] == cfg.model.criterion.weight_dict.loss_giou


def test_the_loss_is_divided_by_the_number_of_target_boxes() -> None:
    """Two matched pairs, num_boxes 2: (|log 1 - log 2| + |log 3 - log 1|) / 2."""
    from detr_lightning.detr.matched_pairs import MatchedPairs

    pred = torch.tensor([[[0.5, 0.5, 0.1, 0.1], [0.5, 0.5, 0.3, 0.1]]])
    targets = [{"boxes": torch.tensor([[0.5, 0.5, 0.2, 0.1], [0.4, 0.4, 0.2, 0.2]])}]
    match = [[(torch.tensor([0, 1]), torch.tensor([0, 1]))]]
    pairs = MatchedPairs.of(match, [2], torch.device("cpu"))
    out = AspectRatioLoss()([{"pred_boxes": pred}], targets, pairs, torch.tensor(2.0))
    expected = (math.log(2) + math.log(3)) / 2
    assert out["loss_aspect"].tolist() == pytest.approx([expected], rel=1e-5)
