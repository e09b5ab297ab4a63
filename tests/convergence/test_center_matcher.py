"""CenterMatcher: the geometric one-to-many assignment of tokens to targets."""

import levers
import pytest
import torch

from detr_lightning.convergence.center_matcher import CenterMatcher


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
    out = CenterMatcher(radius=1.5)({"cells": levers.cells(4, 4)}, [{"boxes": boxes}])
    # A: cell centres inside it and closer than 1.5 cells to its centre are rows/cols 1-2
    # (0.125 is exactly 1.5 cells away); token 10 goes to the smaller C; B gets its centre cell.
    assert _pairs(out) == {0: 1, 5: 0, 6: 0, 9: 0, 10: 2}


def test_radius_widens_the_centre_region():
    boxes = torch.tensor([[0.5, 0.5, 0.9, 0.9]])
    out = CenterMatcher(radius=2.0)({"cells": levers.cells(4, 4)}, [{"boxes": boxes}])
    assert sorted(_pairs(out)) == list(range(16))  # every centre is within 1.5 < 2 cells


def test_padding_tokens_are_never_positive():
    # 2 x 4 map whose last two columns are padding: real cells are 0.5 wide (2 real columns).
    boxes = torch.tensor([[0.9, 0.5, 0.2, 0.9]])  # hugs the right edge of the real image
    out = CenterMatcher(radius=3.0)({"cells": levers.cells(2, 4, real_w=2)}, [{"boxes": boxes}])
    assert sorted(_pairs(out)) == [1, 5]  # column 1 of both rows; columns 2-3 are padding
    empty = CenterMatcher()({"cells": levers.cells(2, 4)}, [{"boxes": torch.zeros(0, 4)}])
    assert empty[0][0].numel() == 0 and empty[0][1].numel() == 0


def test_missing_cells_and_bad_radius_are_explained():
    with pytest.raises(KeyError, match="cells"):
        CenterMatcher()({"pred_boxes": torch.zeros(1, 4, 4)}, [{"boxes": torch.zeros(0, 4)}])
    with pytest.raises(ValueError, match="radius"):
        CenterMatcher(radius=0)
