"""ConvergenceCriterion: the dense-proposal, denoising and group losses."""

import levers
import torch

from detr_lightning.convergence.center_matcher import CenterMatcher
from detr_lightning.convergence.criterion import ConvergenceCriterion
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
