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


def test_every_peak_ranks_before_every_non_peak():
    """Docstring: 'Top-k proposals per image (peaks first, then the best of the rest)'. A weak
    isolated peak (p = 0.12) must beat a strong non-peak (p = 0.92, next to a stronger cell)."""
    from detr_lightning.convergence.conv_proposals import ConvProposals
    from detr_lightning.convergence.focal_scoring import FocalScoring

    head = ConvProposals(4, 1, scoring=FocalScoring())
    mask = torch.ones(1, 3, 3, dtype=torch.bool)
    logits = torch.full((1, 9, 1), -8.0)
    logits[0, 0, 0] = 3.0  # peak
    logits[0, 1, 0] = 2.5  # neighbour of cell 0: not a peak
    logits[0, 8, 0] = -2.0  # isolated weak peak
    boxes = torch.rand(1, 9, 4)
    feats = torch.randn(1, 9, 4)
    ref, _, _ = head.select(
        {"pred_logits": logits, "pred_boxes": boxes, "features": feats}, mask, k=2
    )
    torch.testing.assert_close(ref, boxes[:, [0, 8]])


def test_conv_proposal_box_reads_its_four_side_distances():
    """Docstring: a box is given as log distances from the cell centre to its four sides
    (left, top, right, bottom), in cells. Distances (1, 0.5, 2, 0.25) cells at the centre
    cell of a 4x4 map (cell side 0.25, centre (0.375, 0.375))."""
    import math

    from detr_lightning.convergence.conv_proposals import ConvProposals
    from detr_lightning.convergence.focal_scoring import FocalScoring

    head = ConvProposals(4, 1, scoring=FocalScoring()).eval()
    with torch.no_grad():
        head.box_conv.bias.copy_(torch.tensor([1.0, 0.5, 2.0, 0.25]).log())
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    out = head(torch.randn(1, 16, 4), mask)
    x1, y1, x2, y2 = 0.375 - 0.25, 0.375 - 0.125, 0.375 + 0.5, 0.375 + 0.0625
    want = torch.tensor([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
    torch.testing.assert_close(out["pred_boxes"][0, 5], want)
    assert math.isclose(float(out["pred_boxes"][0, 5, 2]), 0.75, rel_tol=1e-5)


def test_box_vote_on_a_padded_map_ignores_padding_cells():
    """best is -inf on padding; a real cell's voted box must stay the score-weighted mean of
    its real, overlapping neighbours (brute force below), never NaN."""
    from torchvision.ops import box_convert, box_iou

    from detr_lightning.convergence.conv_proposals import ConvProposals
    from detr_lightning.convergence.focal_scoring import FocalScoring

    torch.manual_seed(0)
    head = ConvProposals(4, 1, scoring=FocalScoring(), box_vote=0.3)
    h, w = 3, 3
    mask = torch.ones(1, h, w, dtype=torch.bool)
    mask[0, :, 2] = False
    boxes = torch.tensor([0.4, 0.5, 0.5, 0.5]).repeat(1, 9, 1) + 0.05 * torch.rand(1, 9, 4)
    best = torch.rand(1, 9)
    best[~mask.flatten(1)] = float("-inf")
    voted = head.voted_boxes(boxes, best, mask)
    xyxy = box_convert(boxes[0], "cxcywh", "xyxy")
    for cell in range(9):
        if not mask.flatten()[cell]:
            continue
        r, c = divmod(cell, w)
        num, den = torch.zeros(4), 0.0
        for rr in range(max(r - 1, 0), min(r + 2, h)):
            for cc in range(max(c - 1, 0), min(c + 2, w)):
                n = rr * w + cc
                weight = max(float(best[0, n]), 0.0) + 1e-6
                if box_iou(xyxy[n : n + 1], xyxy[cell : cell + 1]).item() > 0.3:
                    num, den = num + weight * xyxy[n], den + weight
        want = box_convert((num / den)[None], "xyxy", "cxcywh")[0]
        torch.testing.assert_close(voted[0, cell], want, atol=1e-5, rtol=1e-5)


def test_conv_proposals_on_real_cells_ignore_the_memory_under_padding():
    """Docstring: padding cells are zeroed 'so that they do not leak into real cells': the
    outputs at real cells do not change when the memory at padding positions does."""
    from detr_lightning.convergence.conv_proposals import ConvProposals
    from detr_lightning.convergence.focal_scoring import FocalScoring

    torch.manual_seed(0)
    head = ConvProposals(8, 2, scoring=FocalScoring()).eval()
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    mask[0, :, 3] = False
    memory = torch.randn(1, 16, 8)
    other = memory.clone()
    other[0, ~mask.flatten()] += 5 * torch.randn(int((~mask).sum()), 8)
    real = mask.flatten()
    a, b = head(memory, mask), head(other, mask)
    torch.testing.assert_close(a["pred_logits"][0, real], b["pred_logits"][0, real])
    torch.testing.assert_close(a["pred_boxes"][0, real], b["pred_boxes"][0, real])


def test_fresh_boxes_away_from_the_border_are_four_cells_a_side():
    """Unclipped: on an 8 x 8 map (cells 1/8) the cell at (row 3, col 4) is centred at
    (4.5 / 8, 3.5 / 8); two cells each way gives a 0.5 x 0.5 box around that centre."""
    head = ConvProposals(8, 1, scoring=FocalScoring()).eval()
    out = head(torch.randn(1, 64, 8), torch.ones(1, 8, 8, dtype=torch.bool))
    torch.testing.assert_close(out["pred_boxes"][0, 3 * 8 + 4],
                               torch.tensor([4.5 / 8, 3.5 / 8, 0.5, 0.5]))  # fmt: skip


def test_a_box_vote_threshold_of_zero_is_allowed():
    # [0, 1): 0 lets every overlapping neighbour vote
    assert ConvProposals(4, 1, scoring=FocalScoring(), box_vote=0.0).box_vote == 0.0


def test_without_peaks_a_strong_neighbour_ranks_by_its_score():
    """peaks=False is a plain top-k: the non-peak cell 1 (p = 0.92, next to the stronger cell 0)
    comes before the isolated weak cell 8 (p = 0.12), every real cell has a score, and no
    query's class prior is demoted."""
    head = ConvProposals(4, 1, scoring=FocalScoring(), peaks=False)
    mask = torch.ones(1, 3, 3, dtype=torch.bool)
    logits = torch.full((1, 9, 1), -8.0)
    logits[0, 0, 0], logits[0, 1, 0], logits[0, 8, 0] = 3.0, 2.5, -2.0
    boxes, feats = torch.rand(1, 9, 4), torch.randn(1, 9, 4)
    assert torch.isfinite(head.scores(logits, mask)).all()
    ref, _, prior = head.select(
        {"pred_logits": logits, "pred_boxes": boxes, "features": feats}, mask, k=2
    )
    torch.testing.assert_close(ref, boxes[:, [0, 1]])
    torch.testing.assert_close(prior, logits[:, [0, 1]])
