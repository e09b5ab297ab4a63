"""CenterMatcher (geometric one-to-many assignment) and the training-only encoder aux head."""

import pytest
import torch

from detr_lightning.convergence.center_matcher import CenterMatcher
from detr_lightning.convergence.model import AcceleratedDETR
from detr_lightning.convergence.proposals import EncoderProposals
from detr_lightning.detr.backbone import Backbone
from detr_lightning.detr.position_encoding import PositionEmbeddingSine
from detr_lightning.detr.transformer import Transformer
from detr_lightning.loss import HungarianMatcher, SetCriterion


def _cells(h: int, w: int, real_w: int | None = None) -> torch.Tensor:
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    mask[:, :, : real_w or w] = True
    return EncoderProposals.cells(mask)


def _pairs(indices) -> dict[int, int]:
    ((tokens, targets),) = indices
    return dict(zip(tokens.tolist(), targets.tolist(), strict=True))


def test_hand_built_assignment_on_a_4x4_map():
    # Cell centres at 0.125, 0.375, 0.625, 0.875 on both axes; token = 4 * row + col.
    boxes = torch.tensor([
        [0.5, 0.5, 0.8, 0.8],      # A: large; centre on the corner of cells (1|2, 1|2)
        [0.1, 0.1, 0.05, 0.05],    # B: smaller than a cell, contains no cell centre
        [0.625, 0.625, 0.3, 0.3],  # C: inside A, smaller: claims the token both want
    ])  # fmt: skip
    out = CenterMatcher(radius=1.5)({"cells": _cells(4, 4)}, [{"boxes": boxes}])
    # A: cell centres inside it and closer than 1.5 cells to its centre are rows/cols 1-2
    # (0.125 is exactly 1.5 cells away); token 10 goes to the smaller C; B gets its centre cell.
    assert _pairs(out) == {0: 1, 5: 0, 6: 0, 9: 0, 10: 2}


def test_radius_widens_the_centre_region():
    boxes = torch.tensor([[0.5, 0.5, 0.9, 0.9]])
    out = CenterMatcher(radius=2.0)({"cells": _cells(4, 4)}, [{"boxes": boxes}])
    assert sorted(_pairs(out)) == list(range(16))  # every centre is within 1.5 < 2 cells


def test_padding_tokens_are_never_positive():
    # 2 x 4 map whose last two columns are padding: real cells are 0.5 wide (2 real columns).
    boxes = torch.tensor([[0.9, 0.5, 0.2, 0.9]])  # hugs the right edge of the real image
    out = CenterMatcher(radius=3.0)({"cells": _cells(2, 4, real_w=2)}, [{"boxes": boxes}])
    assert sorted(_pairs(out)) == [1, 5]  # column 1 of both rows; columns 2-3 are padding
    empty = CenterMatcher()({"cells": _cells(2, 4)}, [{"boxes": torch.zeros(0, 4)}])
    assert empty[0][0].numel() == 0 and empty[0][1].numel() == 0


def test_missing_cells_and_bad_radius_are_explained():
    with pytest.raises(KeyError, match="cells"):
        CenterMatcher()({"pred_boxes": torch.zeros(1, 4, 4)}, [{"boxes": torch.zeros(0, 4)}])
    with pytest.raises(ValueError, match="radius"):
        CenterMatcher(radius=0)


def test_criterion_normalises_encoder_losses_by_positive_tokens():
    cells = _cells(4, 4)
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
    criterion = SetCriterion(
        2, HungarianMatcher(focal=True), focal=True, encoder_matcher=CenterMatcher()
    )
    losses = criterion({**dec, "enc_outputs": enc}, [target])
    # Every positive is off by 0.1 in cx only: L1 sum 5 * 0.1, over 5 positives.
    torch.testing.assert_close(losses["loss_bbox_enc"], torch.tensor(0.1))
    # Focal loss of the 5 positives at logit -20 (negatives contribute ~0), over 5 positives:
    # alpha * (1 - p)^2 * -log(p) with p = sigmoid(-20), i.e. about 0.25 * 20.
    torch.testing.assert_close(losses["loss_ce_enc"], torch.tensor(0.25 * 20.0), rtol=1e-3, atol=0)


def _aux_model() -> AcceleratedDETR:
    torch.manual_seed(0)
    transformer = Transformer(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=2,
                              dim_feedforward=64, dropout=0.0)  # fmt: skip
    return AcceleratedDETR(
        Backbone("resnet18", norm="bn", last_stage="layer3", train_stem=True, width=16),
        PositionEmbeddingSine(16), transformer, num_classes=3, num_queries=5, focal=True,
        encoder_aux_head=True,
    )  # fmt: skip


def test_encoder_aux_head_trains_the_backbone_and_leaves_the_decoder_alone():
    model = _aux_model()
    pixel_values = torch.randn(2, 3, 64, 64)
    targets = [{"labels": torch.tensor([2]), "boxes": torch.tensor([[0.3, 0.6, 0.2, 0.3]])}] * 2
    out = model(pixel_values, targets=targets)
    assert out["enc_outputs"]["cells"].shape == (2, 16, 4)  # 4 x 4 tokens at stride 16
    # The decoder is the paper's: the same weights without the aux head give the same outputs.
    model.encoder_aux_head = False
    plain = model(pixel_values, targets=targets)
    torch.testing.assert_close(out["pred_boxes"], plain["pred_boxes"])
    torch.testing.assert_close(
        out["aux_outputs"][0]["pred_logits"], plain["aux_outputs"][0]["pred_logits"]
    )
    assert "enc_outputs" not in plain
    criterion = SetCriterion(
        3, HungarianMatcher(focal=True), focal=True, encoder_matcher=CenterMatcher()
    )
    losses = criterion(out, targets)
    model.zero_grad()
    (losses["loss_ce_enc"] + losses["loss_bbox_enc"]).backward()
    assert model.backbone.body.get_parameter("conv1.weight").grad.abs().sum() > 0
    assert model.class_embed.weight.grad is None  # only the aux head and what feeds it
    model.encoder_aux_head = True
    model.eval()
    assert "enc_outputs" not in model(pixel_values)
