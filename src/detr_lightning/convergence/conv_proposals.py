"""Convolutional dense proposals and peak query selection (``proposal_head=conv``).

A drop-in alternative to :class:`~detr_lightning.convergence.proposals.EncoderProposals` for
two-stage query selection, built like a one-stage detector's head (FCOS): a tower of 3x3
convolutions over the memory laid back out as a map, then per-cell class logits and a box given
as log distances from the cell centre to its four sides, in cells: the 3x3 tower sees each
cell's neighbourhood, and the log-distance box needs no anchor size (docs/convergence.md compares
it with the per-token head).

Query selection keeps only *peaks*: cells whose best class probability is the largest of their
3x3 neighbourhood (CenterNet's max-pool filter). CenterMatcher makes several cells around an
object's centre positive, so a plain top-k spends most queries on copies of the same objects;
the peaks are mostly one per object, and the decoder's one-to-one matching then starts from a
set with few duplicates instead of having to learn to suppress them. An image with fewer peaks
than queries fills the rest with its best other cells; their class prior (the logits the
decoder starts from under ``class_prior``) is lowered by ``NON_PEAK_DEMOTION`` so that they
start as "no object" rather than as confident duplicates.

With ``box_vote``, a selected cell's box is the score-weighted mean of the boxes of its 3x3
neighbourhood that overlap it (box voting): CenterMatcher trains every cell near an object's
centre to predict that object's box, so its neighbours are further estimates of the same box.

With ``tower_dilation`` above 1 the tower's convolutions are dilated (YOLOF's dilated encoder,
in the head): a cell's class and box then see more of the map around it at the same cost, one
cell plus the sum of the dilations each side (3 plain), which a large object needs when the
trunk's cell sees less than half of it (docs/convergence.md). A plain first layer (``[1, 3]``)
keeps each cell's immediate neighbours in every path; small objects live there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert

from detr_lightning.convergence.proposals import (
    EncoderProposals,
    best_class_probability,
    check_enough_tokens,
    gather_queries,
)
from detr_lightning.detr.class_scoring import SoftmaxScoring
from detr_lightning.detr.loss_terms import paired_inter_union

NON_PEAK_DEMOTION = 10.0  # logit units taken from the class prior of non-peak queries


class ConvProposals(nn.Module):
    """Per-cell class and box proposals from a 3x3 conv tower, and peak top-k selection.

    Args:
        d_model: width of the memory (and of the tower).
        num_logits: class-logit columns (the scoring's).
        scoring: the model's class scoring: it scores the proposals, starts the class conv and
            demotes non-peaks.
        tower_layers: 3x3 conv + BatchNorm + ReLU layers before the two output convolutions.
        peaks: select only 3x3 local maxima of the score map (False = plain top-k).
        box_vote: IoU above which a 3x3 neighbour's box joins the selected cell's box in a
            score-weighted mean (None = each query keeps its own cell's box).
        tower_dilation: dilation of the tower's 3x3 convolutions, one for all or a list of one
            per layer (1 = plain; the output convolutions stay undilated).
    """

    def __init__(
        self,
        d_model: int,
        num_logits: int,
        scoring: SoftmaxScoring,
        tower_layers: int = 2,
        peaks: bool = True,
        box_vote: float | None = None,
        tower_dilation: int | Sequence[int] = 1,
    ) -> None:
        super().__init__()
        if isinstance(tower_dilation, int):
            tower_dilation = [tower_dilation] * tower_layers
        dilations = list(tower_dilation)
        if len(dilations) != tower_layers or min(dilations, default=1) < 1:
            raise ValueError(
                f"model.net.queries.head.tower_dilation={dilations}: one dilation of 1 (plain "
                f"3x3 convolutions) or more for all tower layers, or a list of {tower_layers} "
                "(tower_layers)."
            )
        if box_vote is not None and not 0 <= box_vote < 1:
            raise ValueError(
                f"model.net.queries.head.box_vote={box_vote}: an IoU threshold in [0, 1), or "
                "null for no box voting."
            )
        self.scoring, self.peaks, self.box_vote = scoring, peaks, box_vote
        layers: list[nn.Module] = []
        for dil in dilations:
            layers += [
                nn.Conv2d(d_model, d_model, 3, padding=dil, dilation=dil, bias=False),
                nn.BatchNorm2d(d_model),
                nn.ReLU(inplace=True),
            ]
        self.tower = nn.Sequential(*layers)
        self.class_conv = nn.Conv2d(d_model, num_logits, 3, padding=1)
        self.box_conv = nn.Conv2d(d_model, 4, 3, padding=1)
        scoring.init_class_head(self.class_conv)
        # Every proposal starts as a box four cells wide and high around its cell centre.
        nn.init.zeros_(self.box_conv.weight)
        nn.init.constant_(self.box_conv.bias, math.log(2.0))

    def forward(self, memory: Tensor, mask: Tensor) -> dict[str, Tensor]:
        """memory [B, S=h*w, d], mask [B, h, w] bool (True = real) -> ``pred_logits``
        [B, S, num_logits], ``pred_boxes`` [B, S, 4] normalised cxcywh (clipped to the image),
        ``features`` [B, S, d] (the tower's output) and ``cells`` [B, S, 4] (see
        :meth:`EncoderProposals.cells`)."""
        b, h, w = mask.shape
        grid = memory.transpose(1, 2).reshape(b, -1, h, w)
        # Padding cells hold memory too; zero them so that they do not leak into real cells.
        features = self.tower(grid * mask[:, None].to(grid.dtype))
        logits = self.class_conv(features).flatten(2).transpose(1, 2)
        distances = self.box_conv(features).flatten(2).transpose(1, 2).clamp(max=8).exp()
        cells = EncoderProposals.cells(mask).to(memory.dtype)
        centre, cell = cells[..., :2], cells[..., 2:]
        xyxy = torch.cat(
            [centre - distances[..., :2] * cell, centre + distances[..., 2:] * cell], -1
        )
        return {
            "pred_logits": logits,
            "pred_boxes": box_convert(xyxy.clamp(0, 1), "xyxy", "cxcywh"),
            "features": features.flatten(2).transpose(1, 2),
            "cells": cells,
        }

    @torch.no_grad()
    def scores(self, logits: Tensor, mask: Tensor) -> Tensor:
        """Best real-class probability per cell [B, S]: -inf on padding and, with ``peaks``, on
        every cell that is not the maximum of its 3x3 neighbourhood."""
        best = best_class_probability(logits, mask.flatten(1), self.scoring)
        return best.masked_fill(~self._peaks(best, mask), float("-inf"))

    def _peaks(self, best: Tensor, mask: Tensor) -> Tensor:
        """[B, S] bool: real cells that are 3x3 maxima of ``best`` [B, S] (every real cell
        without ``peaks``)."""
        real = torch.isfinite(best)
        if not self.peaks:
            return real
        grid = best.view(mask.shape)[:, None]
        return real & (grid == F.max_pool2d(grid, 3, stride=1, padding=1)).flatten(1)

    def select(
        self, proposals: dict[str, Tensor], mask: Tensor, k: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Top-``k`` proposals per image (peaks first, then the best of the rest) -> reference
        boxes [B, k, 4] cxcywh, content queries [B, k, d] and class logits [B, k, num_logits]
        (the decoder's class prior; a non-peak's is demoted by ``NON_PEAK_DEMOTION``), all
        detached: the decoder refines them, the ``_enc`` losses train the head."""
        check_enough_tokens(mask, k)
        logits = proposals["pred_logits"]
        best = best_class_probability(logits, mask.flatten(1), self.scoring)
        peak = self._peaks(best, mask)
        # Non-peaks rank after every peak (probabilities are <= 1) but before padding (-inf).
        idx = torch.where(peak, best, best - 2.0).topk(k, dim=1).indices
        # A non-peak stands next to a stronger cell of the same object: its logits would make
        # it a confident duplicate, so its prior says "no object" (sigmoid ~ e-10 lower, or the
        # no-object column raised) and the decoder starts it as background.
        filler = (~peak).gather(1, idx)[..., None].to(logits.dtype) * NON_PEAK_DEMOTION
        prior = self.scoring.demote(gather_queries(logits, idx), filler)
        boxes = proposals["pred_boxes"]
        if self.box_vote is not None:
            boxes = self.voted_boxes(boxes.detach(), best, mask)
        return gather_queries(boxes, idx), gather_queries(proposals["features"], idx), prior

    @torch.no_grad()
    def voted_boxes(self, boxes: Tensor, best: Tensor, mask: Tensor) -> Tensor:
        """Every cell's box averaged with the 3x3 neighbours' boxes whose IoU with it exceeds
        ``box_vote``, weighted by their best class probability.

        Args:
            boxes: [B, S, 4] normalised cxcywh per cell; best: [B, S] best class probability
                (-inf on padding); mask: [B, h, w] bool (True = real), S = h*w.
        Returns:
            [B, S, 4] normalised cxcywh.
        """
        b, h, w = mask.shape
        # The cell itself always votes, so a weight never sums to zero.
        weight = best.clamp(min=0).view(b, 1, h, w) + 1e-6
        xyxy = box_convert(boxes, "cxcywh", "xyxy").transpose(1, 2).reshape(b, 4, h, w)
        # Shifted copies instead of F.unfold: the same numbers, and ONNX exports slices.
        padded = F.pad(torch.cat([xyxy, weight], 1), (1, 1, 1, 1))  # padding votes with 0
        near = torch.stack(
            [padded[..., dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)], 2
        )  # [B, 5, 9, h, w]
        near_boxes, near_weight = near[:, :4], near[:, 4]
        inter, union = paired_inter_union(
            near_boxes.movedim(1, -1), xyxy[:, :, None].movedim(1, -1)
        )
        overlap = inter / union.clamp(min=1e-12)  # [B, 9, h, w]
        near_weight = near_weight * (overlap > self.box_vote)
        voted = (near_boxes * near_weight[:, None]).sum(2) / near_weight.sum(1)[:, None]
        return box_convert(voted.flatten(2).transpose(1, 2), "xyxy", "cxcywh")
