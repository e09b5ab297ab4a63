"""Grid queries: the README's worked example of a new lever."""

import levers
import pytest
import torch

from detr_lightning.convergence.dims import ModelDims
from detr_lightning.convergence.grid_queries import GridQueries
from detr_lightning.detr.class_scoring import SoftmaxScoring


def test_grid_boxes_tile_the_image_row_by_row():
    grid = GridQueries(ModelDims(8, 5, 3, 4, SoftmaxScoring(), 2))
    # ceil(sqrt(5)) = 3: cells of side 1/3, centres at 1/6, 1/2, 5/6; the first 5 in row order.
    third = 1 / 3
    expected = torch.tensor(
        [[1 / 6, 1 / 6, third, third], [0.5, 1 / 6, third, third], [5 / 6, 1 / 6, third, third],
         [1 / 6, 0.5, third, third], [0.5, 0.5, third, third]]
    )  # fmt: skip
    torch.testing.assert_close(grid.boxes, expected)


def test_grid_queries_plug_in_without_touching_the_model():
    from functools import partial

    model = levers.model(queries=partial(GridQueries), box_refinement=levers.REFINE).eval()
    out = model(*levers.batch()[:2])
    # Fresh refinement heads keep their references: every layer predicts the grid.
    for boxes in [out["pred_boxes"], *(aux["pred_boxes"] for aux in out["aux_outputs"])]:
        torch.testing.assert_close(boxes, model.queries.boxes.expand(2, -1, -1), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="box_refinement"):
        levers.model(queries=partial(GridQueries))


def test_a_square_number_of_queries_tiles_the_whole_image():
    # 4 queries: a 2 x 2 grid of half-image cells, no empty cell
    grid = GridQueries(ModelDims(8, 4, 3, 4, SoftmaxScoring(), 2))
    expected = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.25, 0.5, 0.5],
                             [0.25, 0.75, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]])  # fmt: skip
    torch.testing.assert_close(grid.boxes, expected)
