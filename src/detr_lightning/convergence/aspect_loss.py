"""An extra loss of the matched pairs, the worked example of README "Adding a loss term".

``loss_aspect``: the L1 distance between the log aspect ratios (log w/h) of each matched
predicted box and its target, summed and divided by the batch's box count like ``loss_bbox``.
L1 on (cx, cy, w, h) charges a tall thin box and a wide flat one of the same errors alike; in
log-ratio terms the shape error is one number that does not shrink with the object. Plugged in
through ``model.criterion.extra_terms`` (``loss_term=aspect``), weighted by
``weight_dict.loss_aspect``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from detr_lightning.detr.matched_pairs import MatchedPairs


class AspectRatioLoss(nn.Module):
    """``loss_aspect`` of L stacked prediction sets (see the module docstring).

    Args:
        eps: floor on widths and heights before the logarithm (degenerate boxes stay finite).
    """

    keys = ("loss_aspect",)

    def __init__(self, eps: float = 1e-4) -> None:
        super().__init__()
        self.eps = eps

    def forward(
        self,
        layers: Sequence[dict],
        targets: list[dict[str, Tensor]],
        pairs: MatchedPairs,
        num_boxes: Tensor,
    ) -> dict[str, Tensor]:
        """
        Args:
            layers: L dicts with "pred_boxes" [B, Q, 4] normalised cxcywh.
            targets: per image, "boxes" [T, 4] normalised cxcywh.
            pairs: the matched (layer, batch, query, target) indices of the L sets.
            num_boxes: scalar normaliser (the batch's target count).
        Returns:
            {"loss_aspect": [L]}.
        """
        boxes = torch.stack([out["pred_boxes"] for out in layers])
        src = boxes[pairs.layer, pairs.batch, pairs.query].float()
        tgt = torch.cat([t["boxes"] for t in targets])[pairs.target].float()
        per_pair = (_log_aspect(src, self.eps) - _log_aspect(tgt, self.eps)).abs()
        per_set = per_pair.new_zeros(len(layers)).index_add(0, pairs.layer, per_pair)
        return {"loss_aspect": per_set / num_boxes}


def _log_aspect(boxes: Tensor, eps: float) -> Tensor:
    """[M, 4] cxcywh -> [M] log(w / h), sides floored at ``eps``."""
    return boxes[:, 2].clamp(min=eps).log() - boxes[:, 3].clamp(min=eps).log()
