"""The extra-term contract of SetCriterion: a term without a weight, one named like a paper loss
or like another term, one without ``keys``, and one returning other names or shapes than it
declares are each refused by name; a weight of 0 logs a term without training it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detr_lightning.detr.criterion import SetCriterion
from detr_lightning.detr.matcher import HungarianMatcher


class CenterLoss(nn.Module):
    """|cx - cx_target| of the matched pairs, per prediction set: a well-formed term."""

    keys = ("loss_center",)

    def forward(self, layers, targets, pairs, num_boxes):
        boxes = torch.stack([out["pred_boxes"] for out in layers])
        src = boxes[pairs.layer, pairs.batch, pairs.query][:, 0]
        tgt = torch.cat([t["boxes"] for t in targets])[pairs.target][:, 0]
        per_set = torch.zeros(len(layers)).index_add(0, pairs.layer, (src - tgt).abs())
        return {"loss_center": per_set / num_boxes}


class Returns(CenterLoss):
    """Declares ``loss_center`` and returns ``value`` under ``name``."""

    def __init__(self, name: str, value) -> None:
        super().__init__()
        self.name, self.value = name, value

    def forward(self, layers, targets, pairs, num_boxes):
        return {self.name: self.value}


class Named(CenterLoss):
    def __init__(self, keys) -> None:
        super().__init__()
        self.keys = keys


def _batch() -> tuple[dict, list[dict]]:
    """One image, one target at cx 0.5; two queries, one aux layer (L = 2 prediction sets)."""
    boxes = torch.tensor([[[0.3, 0.5, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1]]])
    logits = torch.zeros(1, 2, 3)
    outputs = {"pred_logits": logits, "pred_boxes": boxes,
               "aux_outputs": [{"pred_logits": logits, "pred_boxes": boxes}]}  # fmt: skip
    return outputs, [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]


def _criterion(terms: dict, **weights: float) -> SetCriterion:
    return SetCriterion(2, HungarianMatcher(), extra_terms=terms,
                        weight_dict={"loss_ce": 1.0, "loss_bbox": 5.0, **weights})  # fmt: skip


def test_a_term_without_a_weight_is_refused_and_a_zero_weight_logs_it_only() -> None:
    with pytest.raises(ValueError, match=r"weight_dict\.loss_center=<weight>"):
        _criterion({"center": CenterLoss()})
    criterion = _criterion({"center": CenterLoss()}, loss_center=0.0)
    losses = criterion(*_batch())
    # the matched query 0 is 0.2 from the target's centre in both sets
    assert losses["loss_center"].item() == pytest.approx(0.2)
    assert losses["loss_center_0"].item() == pytest.approx(0.2)
    without = {k: v for k, v in losses.items() if not k.startswith("loss_center")}
    assert criterion.weighted_total(losses).item() == pytest.approx(
        criterion.weighted_total(without).item()
    )


@pytest.mark.parametrize("key", ["loss_bbox", "loss_dice", "class_error"])
def test_a_term_named_like_a_built_in_loss_is_refused(key: str) -> None:
    with pytest.raises(ValueError, match=f"'{key}', which a built-in loss already produces"):
        _criterion({"mine": Named((key,))}, **{key: 1.0})


def test_two_terms_with_the_same_name_are_refused() -> None:
    with pytest.raises(ValueError, match="extra_terms.center already produces"):
        _criterion({"center": CenterLoss(), "again": CenterLoss()}, loss_center=1.0)


@pytest.mark.parametrize("keys", [None, "loss_center", ()])
def test_a_term_without_keys_is_refused_by_name(keys) -> None:
    with pytest.raises(ValueError, match=r"extra_terms\.mine \(Named\) has no `keys`"):
        _criterion({"mine": Named(keys)}, loss_center=1.0)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("loss_centre", torch.zeros(2), r"returned \['loss_centre'\] but declares keys"),
        ("loss_center", torch.tensor(0.5), r"loss_center of shape \(\), expected \(2,\)"),
        # e.g. one value per matched pair, [M], instead of one per prediction set, [L]
        ("loss_center", torch.zeros(3), r"loss_center of shape \(3,\), expected \(2,\)"),
        ("loss_center", 0.5, r"loss_center of shape float"),
    ],
)
def test_a_term_returning_other_names_or_shapes_is_named(name, value, message) -> None:
    criterion = _criterion({"center": Returns(name, value)}, loss_center=1.0)
    with pytest.raises(ValueError, match=message):
        criterion(*_batch())


class ThreeArgs(CenterLoss):
    """Forgets ``num_boxes``: a forward the criterion cannot call."""

    def forward(self, layers, targets, pairs):
        return super().forward(layers, targets, pairs, 1.0)


def test_a_term_with_a_wrong_forward_signature_is_refused_at_construction() -> None:
    with pytest.raises(ValueError) as info:
        _criterion({"center": ThreeArgs()}, loss_center=1.0)
    message = str(info.value)
    assert "model.criterion.extra_terms.center (ThreeArgs)" in message
    assert "forward(layers, targets, pairs, num_boxes)" in message
