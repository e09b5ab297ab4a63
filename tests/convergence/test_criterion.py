"""ConvergenceCriterion: the dense-proposal, denoising and group losses."""

import levers
import torch

from detr_lightning.convergence.center_matcher import CenterMatcher
from detr_lightning.convergence.criterion import ConvergenceCriterion
from detr_lightning.convergence.denoising import make_denoising_queries
from detr_lightning.convergence.focal_scoring import FocalScoring
from detr_lightning.loss import HungarianMatcher


def _criterion(k: int, num_classes: int = 2) -> ConvergenceCriterion:
    return ConvergenceCriterion(
        num_classes,
        HungarianMatcher(scoring=FocalScoring()),
        scoring=FocalScoring(),
        encoder_matches=k,
    )


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


def test_criterion_normalises_encoder_losses_by_positive_tokens():
    cells = levers.cells(4, 4)
    target = {"labels": torch.tensor([1, 0]), "boxes": torch.tensor([[0.5, 0.5, 0.8, 0.8],
                                                                     [0.1, 0.1, 0.05, 0.05]])}  # fmt: skip
    # Positives: tokens 5, 6, 9, 10 -> target 0 and token 0 -> target 1 (5 in all).
    boxes = torch.full((1, 16, 4), 0.5)
    assigned = {0: 1, 5: 0, 6: 0, 9: 0, 10: 0}
    for token, t in assigned.items():
        boxes[0, token] = target["boxes"][t] + torch.tensor([0.1, 0.0, 0.0, 0.0])
    logits = torch.full((1, 16, 2), -20.0)
    enc = {"pred_logits": logits, "pred_boxes": boxes, "cells": cells}
    dec = {"pred_logits": torch.zeros(1, 3, 2), "pred_boxes": torch.full((1, 3, 4), 0.5)}
    criterion = ConvergenceCriterion(
        2,
        HungarianMatcher(scoring=FocalScoring()),
        scoring=FocalScoring(),
        encoder_matcher=CenterMatcher(),
    )
    losses = criterion({**dec, "enc_outputs": enc}, [target])
    # Every positive is off by 0.1 in cx only: L1 sum 5 * 0.1, over 5 positives.
    torch.testing.assert_close(losses["loss_bbox_enc"], torch.tensor(0.1))
    # Focal loss of the 5 positives at logit -20 (negatives contribute ~0), over 5 positives:
    # alpha * (1 - p)^2 * -log(p) with p = sigmoid(-20), i.e. about 0.25 * 20.
    torch.testing.assert_close(losses["loss_ce_enc"], torch.tensor(0.25 * 20.0), rtol=1e-3, atol=0)


def test_denoising_losses_are_normalised_by_boxes_times_groups():
    """Module docstring: each target appears once per dn group, hence num_boxes * groups.
    2 targets, 3 dn groups, every dn box off by 0.1 in cx: L1 sum 6 * 0.1 over 2 * 3 = 0.1."""
    from detr_lightning.convergence.criterion import ConvergenceCriterion
    from detr_lightning.convergence.focal_scoring import FocalScoring
    from detr_lightning.loss import HungarianMatcher

    target = {"labels": torch.tensor([0, 1]),
              "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])}  # fmt: skip
    dn = make_denoising_queries(
        [target], num_classes=2, num_groups=3, label_noise=0.0, box_noise=0.0
    )
    dn_boxes = dn.boxes + torch.tensor([0.1, 0.0, 0.0, 0.0])
    dn_out = {"pred_logits": torch.zeros(1, 6, 2), "pred_boxes": dn_boxes}
    dec = {"pred_logits": torch.zeros(1, 4, 2), "pred_boxes": torch.full((1, 4, 4), 0.5)}
    crit = ConvergenceCriterion(2, HungarianMatcher(scoring=FocalScoring()), scoring=FocalScoring())
    losses = crit({**dec, "dn_queries": dn, "dn_outputs": dn_out}, [target])
    torch.testing.assert_close(losses["loss_bbox_dn"], torch.tensor(0.1))


def test_one_to_many_encoder_losses_are_normalised_by_k_times_boxes():
    """Module docstring: repeated k times before Hungarian matching, 'normalised by
    encoder_matches * num_boxes'. 2 targets, k = 2, 4 tokens that are the targets off by 0.1
    in cx (+ far tokens): L1 sum 4 * 0.1 over 2 * 2 = 0.1."""
    from detr_lightning.convergence.criterion import ConvergenceCriterion
    from detr_lightning.convergence.focal_scoring import FocalScoring
    from detr_lightning.loss import HungarianMatcher

    target = {"labels": torch.tensor([0, 1]),
              "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.4]])}  # fmt: skip
    near = target["boxes"].repeat(2, 1) + torch.tensor([0.1, 0.0, 0.0, 0.0])
    boxes = torch.cat([near, torch.tensor([[0.05, 0.05, 0.05, 0.05]] * 4)])
    logits = torch.full((8, 2), -8.0)
    logits[torch.arange(4), target["labels"].repeat(2)] = 8.0
    dec = {"pred_logits": torch.zeros(1, 4, 2), "pred_boxes": torch.full((1, 4, 4), 0.5)}
    crit = ConvergenceCriterion(
        2, HungarianMatcher(scoring=FocalScoring()), scoring=FocalScoring(), encoder_matches=2
    )
    losses = crit(
        {**dec, "enc_outputs": {"pred_logits": logits[None], "pred_boxes": boxes[None]}}, [target]
    )
    torch.testing.assert_close(losses["loss_bbox_enc"], torch.tensor(0.1))
