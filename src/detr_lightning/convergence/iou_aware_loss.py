"""IoU-aware classification: the varifocal loss (VarifocalNet, Zhang et al. 2021; RT-DETR).

The focal loss trains a matched query's class score toward 1 whatever its box. COCO AP ranks
detections by score at every IoU threshold, so a loose box scored above a tight one costs AP at
the strict thresholds (AP75) even when both are found. The varifocal loss makes the matched
class's target the box's IoU with its target and weighs the term by that IoU: the score is
trained toward the box's localisation quality. The IoU is detached, so the class loss never pulls a box
toward a worse fit. Every other entry (unmatched queries, other classes of a matched one) keeps
the focal loss's negative term, ``(1 - alpha) p^gamma BCE(p, 0)``, so the two losses differ on
the matched entries only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert

from detr_lightning.detr.loss_terms import paired_inter_union
from detr_lightning.detr.matched_pairs import MatchedPairs


def paired_iou(src: Tensor, tgt: Tensor) -> Tensor:
    """IoU of ``src[i]`` with ``tgt[i]`` (not all pairs, as ``torchvision.ops.box_iou``).

    Args:
        src, tgt: [M, 4] boxes, normalised cxcywh.
    Returns:
        [M] IoUs in [0, 1]; 0 for two empty boxes.
    """
    a, b = box_convert(src.float(), "cxcywh", "xyxy"), box_convert(tgt.float(), "cxcywh", "xyxy")
    inter, union = paired_inter_union(a, b)
    return inter / union.clamp(min=1e-7)


def varifocal_loss(
    logits: Tensor,
    pairs: MatchedPairs,
    labels: Tensor,
    ious: Tensor,
    num_boxes: Tensor,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> Tensor:
    """``loss_ce`` of every prediction set with IoU targets on the matched entries.

    Args:
        logits: [L, B, Q, C] sigmoid class logits of L sets (no "no object" column).
        pairs: the matched predictions of the L sets.
        labels: [M] target class of each pair; ious: [M] IoU of each pair's boxes (detached
            here).
        num_boxes: normaliser (the batch's target count), as the focal loss.
        alpha, gamma: the focal loss's; negatives weigh ``(1 - alpha) * p**gamma``.
    Returns:
        [L] losses: the sum over all entries of ``w * BCE(logit, t)`` / ``num_boxes``, with
        ``t = IoU`` and ``w = IoU`` on a matched (query, label) entry and ``t = 0``,
        ``w = (1 - alpha) p^gamma`` elsewhere (p = sigmoid(logit), detached in ``w``).
    """
    logits = logits.float()  # in float32 under bf16 or fp16 autocast, as the focal loss
    entry = (pairs.layer, pairs.batch, pairs.query, labels)
    score = torch.zeros_like(logits)
    score[entry] = ious.detach().float().clamp(0, 1)
    negative = torch.ones_like(logits)
    negative[entry] = 0.0
    weight = (1 - alpha) * logits.detach().sigmoid().pow(gamma) * negative + score
    loss = F.binary_cross_entropy_with_logits(logits, score, weight=weight, reduction="none")
    return loss.flatten(1).sum(1) / num_boxes
