"""Per-token (linear) proposals: every encoder token proposes a class and a box.

Each token (one cell of the feature map) predicts a class and a box relative to an anchor centred
on its cell; :meth:`EncoderProposals.select` takes the ``k`` highest-scoring ones as decoder
queries: their boxes (detached) are the reference boxes that box refinement then refines, their
projected features (detached) the content queries. This is the query selection of Deformable
DETR's two-stage variant as used by DINO and RT-DETR, the ``proposal_head=linear`` option of
:class:`~detr_lightning.convergence.queries.ProposalQueries` (``conv`` is
:mod:`~detr_lightning.convergence.conv_proposals`). The proposals are trained densely, right at
the feature map (``ConvergenceCriterion``: CenterMatcher or Hungarian one-to-many), a local
signal for a randomly initialised backbone. Measurements: docs/convergence.md.

The helpers at the bottom (best class probability, token count check, gathering) are shared
with the conv head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detr_lightning.convergence.box_encoding import inverse_sigmoid
from detr_lightning.detr.class_scoring import SoftmaxScoring
from detr_lightning.detr.set_detector import MLP


class EncoderProposals(nn.Module):
    """Per-token class and box proposals, and the top-k selection that turns them into queries.

    Args:
        d_model: width of the encoder memory.
        num_logits: class-logit columns (the scoring's).
        scoring: the model's class scoring: it scores the proposals and starts the class head.
        anchor_cells: side of every token's anchor box, in feature-map cells.
    """

    def __init__(
        self, d_model: int, num_logits: int, scoring: SoftmaxScoring, anchor_cells: float = 2.0
    ) -> None:
        super().__init__()
        self.scoring = scoring
        self.anchor_cells = anchor_cells
        self.proj = nn.Sequential(nn.Linear(d_model, d_model), nn.LayerNorm(d_model))
        self.class_embed = nn.Linear(d_model, num_logits)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        scoring.init_class_head(self.class_embed)
        # Start every proposal exactly at its anchor.
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    @staticmethod
    def cells(mask: Tensor) -> Tensor:
        """Every token's cell as a box: mask [B, h, w] bool (True = real) -> [B, h*w, 4]
        normalised cxcywh (cell centre, one cell wide and high) relative to each image's
        unpadded size; tokens on padding fall outside [0, 1]."""
        b, h, w = mask.shape
        valid_h = mask[:, :, 0].sum(1).clamp(min=1).to(torch.float32)  # [B]
        valid_w = mask[:, 0, :].sum(1).clamp(min=1).to(torch.float32)
        ys = torch.arange(h, device=mask.device, dtype=torch.float32) + 0.5
        xs = torch.arange(w, device=mask.device, dtype=torch.float32) + 0.5
        cy = (ys[None, :, None] / valid_h[:, None, None]).expand(b, h, w)
        cx = (xs[None, None, :] / valid_w[:, None, None]).expand(b, h, w)
        cw = (1 / valid_w)[:, None, None].expand(b, h, w)
        ch = (1 / valid_h)[:, None, None].expand(b, h, w)
        return torch.stack([cx, cy, cw, ch], dim=-1).flatten(1, 2)

    def anchors(self, cells: Tensor) -> Tensor:
        """Anchor box of every token: its cell [B, S, 4] cxcywh grown to ``anchor_cells``
        cells a side (at most the image); the proposals' sigmoid keeps padding tokens'
        boxes in [0, 1]."""
        side = (cells[..., 2:] * self.anchor_cells).clamp(max=1)
        return torch.cat([cells[..., :2], side], dim=-1)

    def forward(self, memory: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """memory [B, S=h*w, d], mask [B, h, w] -> ``pred_logits`` [B, S, num_logits],
        ``pred_boxes`` [B, S, 4] normalised cxcywh, ``features`` [B, S, d] and ``cells``
        [B, S, 4] (see :meth:`cells`, what :class:`~detr_lightning.convergence.center_matcher.CenterMatcher` reads)."""
        features = self.proj(memory)
        cells = self.cells(mask).to(memory.dtype)
        boxes = (self.bbox_embed(features) + inverse_sigmoid(self.anchors(cells))).sigmoid()
        return {
            "pred_logits": self.class_embed(features),
            "pred_boxes": boxes,
            "features": features,
            "cells": cells,
        }

    @torch.no_grad()
    def scores(self, logits: Tensor, key_mask: Tensor) -> Tensor:
        """Best real-class probability per token [B, S]; -inf on padding so it is never picked
        before a real token."""
        return best_class_probability(logits, key_mask, self.scoring)

    def select(
        self, proposals: dict[str, Tensor], mask: Tensor, k: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Top-``k`` proposals per image, mask [B, h, w] bool (True = real) -> (reference boxes
        [B, k, 4] cxcywh, content queries [B, k, d], class logits [B, k, num_logits]), all
        detached: the decoder refines them, the encoder loss trains them."""
        check_enough_tokens(mask, k)
        idx = self.scores(proposals["pred_logits"], mask.flatten(1)).topk(k, dim=1).indices
        return tuple(
            gather_queries(proposals[key], idx) for key in ("pred_boxes", "features", "pred_logits")
        )


@torch.no_grad()
def best_class_probability(logits: Tensor, key_mask: Tensor, scoring: SoftmaxScoring) -> Tensor:
    """logits [B, S, num_logits], key_mask [B, S] bool (True = real) -> [B, S]: the best real
    class's probability under ``scoring``, -inf on padding."""
    best = scoring.probabilities(logits).max(-1).values
    return best.masked_fill(~key_mask, float("-inf"))


def check_enough_tokens(mask: Tensor, k: int) -> None:
    """Raise when a [B, h, w] feature map has fewer than ``k`` tokens to select queries from."""
    if mask[0].numel() < k:
        raise ValueError(
            f"two_stage selects num_queries={k} encoder tokens but the feature map has only "
            f"{mask[0].numel()}; use larger images, an earlier backbone stage, or fewer queries."
        )


def gather_queries(x: Tensor, idx: Tensor) -> Tensor:
    """Rows ``idx`` [B, k] of x [B, S, c] -> [B, k, c], detached (selection is not trained)."""
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1])).detach()
