"""Grid anchors: reference boxes on a fixed grid over the image instead of learned ones.

The README's worked example of adding a lever: one module (this) and one config file
(``conf/queries/grid.yaml``), enabled with ``queries=grid refine=boxes``. Anchor-DETR places its
anchor points on a grid; here every query starts as a box of one grid cell, which box refinement
then moves, so the decoder starts with the image covered evenly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from detr_lightning.convergence.dims import ModelDims
from detr_lightning.convergence.queries import DecoderQueries
from detr_lightning.detr.set_detector import EncodedImage


def grid_boxes(num_queries: int) -> torch.Tensor:
    """[num_queries, 4] cxcywh boxes: the first cells, row by row, of a ceil(sqrt(Q)) square grid."""
    side = math.ceil(math.sqrt(num_queries))
    centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    size = torch.full_like(cx, 1.0 / side)
    return torch.stack([cx, cy, size, size], dim=-1).reshape(-1, 4)[:num_queries]


class GridQueries(nn.Module):
    """``num_queries`` reference boxes on a ceil(sqrt(Q)) x ceil(sqrt(Q)) grid (row-major, the
    first Q cells), each one cell wide and high; no parameters.

    Args:
        dims: the model's sizes (``d_model``, ``num_queries``).
    """

    uses_reference = True

    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        self.register_buffer("boxes", grid_boxes(dims.num_queries), persistent=False)
        self.d_model = dims.d_model

    def forward(self, enc: EncodedImage) -> DecoderQueries:
        b = enc.memory.shape[0]
        reference = self.boxes[None].expand(b, -1, -1)
        content = enc.memory.new_zeros(b, len(self.boxes), self.d_model)
        return DecoderQueries(content, None, reference)
