"""The per-token (linear) proposal head: anchors, fresh proposals, top-k selection."""

import pytest
import torch

from detr_lightning.convergence.focal_scoring import FocalScoring
from detr_lightning.convergence.proposals import EncoderProposals
from detr_lightning.detr.class_scoring import SoftmaxScoring


def test_anchors_follow_each_images_unpadded_size():
    mask = torch.zeros(2, 2, 4, dtype=torch.bool)
    mask[0] = True  # full 2 x 4 map
    mask[1, :1, :2] = True  # 1 x 2 real cells, rest padding
    head = EncoderProposals(8, 3, scoring=FocalScoring(), anchor_cells=2.0)
    cells = head.cells(mask).view(2, 2, 4, 4)
    # One cell of image 1 is half its real width (2 real columns) and all its real height.
    torch.testing.assert_close(cells[1, 0, 1], torch.tensor([0.75, 0.5, 0.5, 1.0]))
    anchors = head.anchors(cells)
    # Image 0: cell (row 1, col 2) centre = ((2 + .5) / 4, (1 + .5) / 2), side = 2 cells.
    torch.testing.assert_close(anchors[0, 1, 2], torch.tensor([0.625, 0.75, 0.5, 1.0]))
    # Image 1: one real row and two real columns; a 2-cell anchor is clamped to the image.
    torch.testing.assert_close(anchors[1, 0, 1], torch.tensor([0.75, 0.5, 1.0, 1.0]))
    assert anchors[1, 0, 3, 0] > 1  # a padded column lies outside the image


def test_fresh_proposals_sit_on_their_anchors():
    torch.manual_seed(0)
    head = EncoderProposals(8, 3, scoring=FocalScoring())
    mask = torch.ones(1, 3, 3, dtype=torch.bool)
    out = head(torch.randn(1, 9, 8), mask)
    torch.testing.assert_close(out["pred_boxes"], head.anchors(head.cells(mask)), atol=1e-4, rtol=0)
    torch.testing.assert_close(out["cells"], head.cells(mask))
    # Focal prior: a feature-free token scores 1 % for every class.
    torch.testing.assert_close(head.class_embed(torch.zeros(8)).sigmoid(), torch.full((3,), 0.01))


@pytest.mark.parametrize("focal", [True, False])
def test_select_takes_the_best_real_tokens(focal):
    head = EncoderProposals(
        4, 3 if focal else 4, scoring=FocalScoring() if focal else SoftmaxScoring()
    )
    logits = torch.full((1, 5, 3 if focal else 4), -5.0)
    if not focal:
        logits[..., -1] = 5.0  # "no object" wins everywhere ...
    logits[0, 1, 2] = 9.0  # ... except token 1 (best) and token 3 (second)
    logits[0, 3, 0] = 7.0
    logits[0, 4, 1] = 20.0  # the best score of all, but token 4 is padding
    boxes = torch.rand(1, 5, 4, requires_grad=True)
    feats = torch.randn(1, 5, 4, requires_grad=True)
    mask = torch.tensor([[[True, True, True, True, False]]])  # [B=1, h=1, w=5]
    ref, content, prior = head.select(
        {"pred_logits": logits, "pred_boxes": boxes, "features": feats}, mask, k=2
    )
    torch.testing.assert_close(ref, boxes[:, [1, 3]].detach())
    torch.testing.assert_close(content, feats[:, [1, 3]].detach())
    torch.testing.assert_close(prior, logits[:, [1, 3]])
    assert not ref.requires_grad and not content.requires_grad
    with pytest.raises(ValueError, match="only 5"):
        head.select({"pred_logits": logits, "pred_boxes": boxes, "features": feats}, mask, 6)


def test_select_may_take_every_token_of_the_map():
    # k equal to the token count is enough tokens: all 4, best first
    head = EncoderProposals(4, 2, scoring=FocalScoring())
    logits = torch.tensor([[[0.0, -1.0], [3.0, -2.0], [-1.0, 1.0], [-3.0, -3.0]]])
    boxes, feats = torch.rand(1, 4, 4), torch.randn(1, 4, 4)
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    ref, _, _ = head.select({"pred_logits": logits, "pred_boxes": boxes, "features": feats},
                            mask, k=4)  # fmt: skip
    torch.testing.assert_close(ref, boxes[:, [1, 2, 0, 3]])
