"""The conv proposal head: fresh boxes and peak query selection."""

import pytest
import torch
from torchvision.ops import box_convert

from detr_lightning.convergence.conv_proposals import NON_PEAK_DEMOTION, ConvProposals
from detr_lightning.convergence.focal_scoring import FocalScoring
from detr_lightning.convergence.proposals import best_class_probability
from detr_lightning.detr.class_scoring import SoftmaxScoring


def test_fresh_conv_proposals_are_four_cells_around_their_cell():
    head = ConvProposals(8, 3, scoring=FocalScoring())
    mask = torch.zeros(1, 2, 4, dtype=torch.bool)
    mask[0, :, :2] = True  # 2 x 2 real cells, 2 padded columns
    out = head(torch.randn(1, 8, 8), mask)
    boxes = out["pred_boxes"].view(2, 4, 4)
    # Cell (row 0, col 1): centre (0.75, 0.25) of the real image; +-2 cells = +-1.0 wide and
    # high, clipped to the image: x in [0, 1], y in [0, 1].
    torch.testing.assert_close(boxes[0, 1], torch.tensor([0.5, 0.5, 1.0, 1.0]))
    assert out["pred_logits"].shape == (1, 8, 3) and out["features"].shape == (1, 8, 8)
    # Focal prior: every class starts near 1 % (the tower's output is normalised, weights small).
    assert torch.allclose(out["pred_logits"].sigmoid().mean(), torch.tensor(0.01), atol=0.01)


def test_select_prefers_peaks_then_the_rest_and_never_padding():
    head = ConvProposals(4, 2, scoring=FocalScoring())
    mask = torch.ones(1, 3, 3, dtype=torch.bool)
    mask[0, :, 2] = False  # the last column is padding
    logits = torch.full((1, 9, 2), -6.0)
    # Score map (best class): a peak at (0, 0) with a higher neighbour-free peak at (2, 1);
    # (0, 1) is next to (0, 0) and weaker, so not a peak; the padded cell (1, 2) is the largest.
    logits[0, 0, 0] = 3.0
    logits[0, 1, 1] = 2.0
    logits[0, 7, 1] = 5.0
    logits[0, 5, 0] = 9.0  # padding
    boxes = torch.rand(1, 9, 4, requires_grad=True)
    feats = torch.randn(1, 9, 4, requires_grad=True)
    proposals = {"pred_logits": logits, "pred_boxes": boxes, "features": feats}
    scores = head.scores(logits, mask)
    assert torch.isfinite(scores).nonzero()[:, 1].tolist() == [0, 7]  # the two peaks only
    ref, content, prior = head.select(proposals, mask, k=3)
    # Peaks by score (cells 7, 0), then the best non-peak real cell (1); never padding (5).
    torch.testing.assert_close(ref, boxes[:, [7, 0, 1]].detach())
    torch.testing.assert_close(content, feats[:, [7, 0, 1]].detach())
    # The non-peak filler (cell 1, next to the stronger cell 0) starts as "no object".
    torch.testing.assert_close(prior[:, :2], logits[:, [7, 0]])
    torch.testing.assert_close(prior[:, 2], logits[:, 1] - NON_PEAK_DEMOTION)
    assert not (ref.requires_grad or content.requires_grad or prior.requires_grad)
    plain = ConvProposals(4, 2, scoring=FocalScoring(), peaks=False)
    assert plain.select(proposals, mask, k=2)[0].equal(boxes[:, [7, 0]].detach())
    # Softmax heads: the filler's no-object column is raised instead.
    softmax = ConvProposals(4, 3, scoring=SoftmaxScoring())
    three = torch.cat([logits, torch.zeros(1, 9, 1)], dim=-1)
    _, _, prior3 = softmax.select({**proposals, "pred_logits": three}, mask, k=3)
    torch.testing.assert_close(prior3[0, 2], three[0, 1] + torch.tensor([0, 0, NON_PEAK_DEMOTION]))
    with pytest.raises(ValueError, match="only 9"):
        head.select(proposals, mask, k=10)


@pytest.mark.parametrize(
    ("threshold", "expected_x"), [(0.6, (0.64 / 3, 1.84 / 3)), (0.9, (0.2, 0.6))]
)
def test_box_vote_averages_overlapping_neighbours_by_score(threshold, expected_x):
    head = ConvProposals(4, 1, scoring=FocalScoring(), box_vote=threshold)
    mask = torch.ones(1, 3, 4, dtype=torch.bool)
    mask[0, :, 3] = False  # the last column is padding
    xyxy = torch.tensor([0.0, 0.0, 0.05, 0.05]).repeat(12, 1)  # far from everything
    probs = torch.full((12,), 0.01)
    xyxy[5], probs[5] = torch.tensor([0.2, 0.2, 0.6, 0.6]), 0.5  # the voting cell (1, 1)
    xyxy[6], probs[6] = torch.tensor([0.24, 0.2, 0.64, 0.6]), 0.25  # (1, 2): IoU 0.818
    xyxy[0], probs[0] = torch.tensor([0.7, 0.7, 0.9, 0.9]), 0.9  # (0, 0): IoU 0, ignored
    xyxy[7], probs[7] = torch.tensor([0.2, 0.2, 0.6, 0.6]), 0.99  # (1, 3): padding
    logits = torch.logit(probs)[None, :, None]
    cxcywh = box_convert(xyxy, "xyxy", "cxcywh")[None]
    best = best_class_probability(logits, mask.flatten(1), FocalScoring())
    voted = box_convert(head.voted_boxes(cxcywh, best, mask)[0, 5], "cxcywh", "xyxy")
    # By hand: IoU 0.6 < 0.818 -> (0.5 * A + 0.25 * B) / 0.75 = (2A + B) / 3 in x; the padded
    # cell's box (-inf score) and the disjoint one do not move it; IoU 0.9 keeps A alone.
    want = torch.tensor([expected_x[0], 0.2, expected_x[1], 0.6])
    torch.testing.assert_close(voted, want, atol=1e-5, rtol=0)
    # select hands the voted box to the decoder: the peak (0, 0) first, then cell (1, 1).
    proposals = {"pred_logits": logits, "pred_boxes": cxcywh, "features": torch.randn(1, 12, 4)}
    ref, _, _ = head.select(proposals, mask, k=2)
    torch.testing.assert_close(box_convert(ref[0, 1], "cxcywh", "xyxy"), want, atol=1e-5, rtol=0)


def test_box_vote_outside_zero_one_is_explained():
    with pytest.raises(ValueError, match="model.net.queries.head.box_vote=1.0"):
        ConvProposals(4, 1, scoring=FocalScoring(), box_vote=1.0)


def _reach(head: ConvProposals, size: int = 21) -> torch.Tensor:
    """[size, size] bool: the memory cells that the centre cell's class logits depend on."""
    memory = torch.randn(1, size * size, head.class_conv.in_channels, requires_grad=True)
    mask = torch.ones(1, size, size, dtype=torch.bool)
    centre = (size // 2) * size + size // 2
    head(memory, mask)["pred_logits"][0, centre].sum().backward()
    return (memory.grad[0].abs().sum(-1) > 0).view(size, size)


@pytest.mark.parametrize(("dilation", "reach"), [(1, 3), (3, 7), ([1, 3], 5)])
def test_tower_dilation_widens_what_a_cell_sees_without_holes(dilation, reach: int) -> None:
    # By hand: two tower convs of dilation d read offsets {-2d, -d, 0, d, 2d}, the 3x3 class
    # conv +-1 more: 3 cells each way plain, 7 at d = 3, where the class conv's +-1 also fills
    # every cell between the taps (-7..-5, -4..-2, -1..1, ...): no gridding. [1, 3]: the plain
    # layer reads -1..1, the dilated one -3, 0, 3 of that (-4..4), the class conv +-1: 5.
    torch.manual_seed(0)
    # In eval mode: training's batch statistics would couple every cell to every other. Wide
    # enough that no cell's ReLUs are all off, which would cut a path (at 8 channels, some are).
    head = ConvProposals(64, 3, scoring=FocalScoring(), tower_dilation=dilation).eval()
    expected = torch.zeros(21, 21, dtype=torch.bool)
    expected[10 - reach : 11 + reach, 10 - reach : 11 + reach] = True
    assert torch.equal(_reach(head), expected)
    # Same parameters as the plain head: a dilated head loads a plain one's weights.
    head.load_state_dict(ConvProposals(64, 3, scoring=FocalScoring()).state_dict())


def test_a_bad_tower_dilation_is_explained():
    with pytest.raises(ValueError, match=r"tower_dilation=\[0, 0\]: one dilation of 1"):
        ConvProposals(4, 1, scoring=FocalScoring(), tower_dilation=0)
    with pytest.raises(ValueError, match=r"tower_dilation=\[1, 2, 3\]: .* a list of 2"):
        ConvProposals(4, 1, scoring=FocalScoring(), tower_layers=2, tower_dilation=[1, 2, 3])
