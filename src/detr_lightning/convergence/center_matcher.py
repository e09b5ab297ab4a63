"""Geometric one-to-many assignment for dense per-token predictions (FCOS / CenterNet style)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detr_lightning.detr.matcher import MatchIndices


class CenterMatcher(nn.Module):
    """Assign every target to the feature-map tokens around its centre, ignoring the predictions.

    A token is a positive for a target when its cell centre lies inside the target box and
    within ``radius`` cells of the target's centre (FCOS centre sampling), or when its cell
    contains the target's centre (so that objects smaller than a cell still get one positive).
    A token claimed by several targets goes to the one with the smallest area, as in FCOS.

    Why not Hungarian: the costs of a randomly initialised model's predictions are noise, so a
    Hungarian assignment of dense tokens wanders from step to step; a fixed geometric one gives
    the backbone the same, local target every time it sees an object (Co-DETR's auxiliary
    one-to-many heads rely on the same kind of assigner).

    Args:
        radius: half-side of the centre region, in cells.
    """

    def __init__(self, radius: float = 1.5) -> None:
        super().__init__()
        if radius <= 0:
            raise ValueError(f"CenterMatcher: radius={radius}; need > 0 (in feature-map cells).")
        self.radius = radius

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict[str, Tensor]]) -> MatchIndices:
        """Positive (token, target) pairs per image.

        Args:
            outputs: needs "cells" [B, S, 4]: every token's cell as a normalised cxcywh box
                (cell centre, one cell wide and high; tokens on padding lie outside [0, 1]).
            targets: B dicts with "boxes" [T_b, 4] normalised cxcywh.
        Returns:
            B pairs (token indices [K_b], target indices [K_b]) int64. A token appears at most
            once; a target gets no token only when smaller targets claim all of its own.
        """
        if "cells" not in outputs:
            raise KeyError(
                "CenterMatcher needs outputs['cells'] (the tokens' cell boxes); only dense "
                "outputs (enc_outputs of queries=proposals / aux_head models) have them."
            )
        indices = []
        for cells, target in zip(outputs["cells"], targets, strict=True):
            boxes = target["boxes"].to(cells.dtype)  # [T, 4]
            if len(boxes) == 0:
                empty = torch.zeros(0, dtype=torch.int64, device=cells.device)
                indices.append((empty, empty.clone()))
                continue
            # [S, T, 2] offsets of every token centre from every target centre
            offset = cells[:, None, :2] - boxes[None, :, :2]
            inside = (offset.abs() < boxes[None, :, 2:] / 2).all(dim=-1)
            in_cells = (offset / cells[:, None, 2:]).abs()
            near = (in_cells < self.radius).all(dim=-1)
            centre_cell = (in_cells <= 0.5).all(dim=-1)
            positive = (inside & near) | centre_cell
            area = (boxes[:, 2] * boxes[:, 3])[None].expand_as(positive)
            area = area.masked_fill(~positive, float("inf"))
            smallest = area.argmin(dim=1)  # [S]
            token = positive.any(dim=1).nonzero().squeeze(1)
            indices.append((token, smallest[token]))
        return indices
