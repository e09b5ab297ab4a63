"""Sigmoid class scorings: the focal loss of Deformable DETR and the varifocal loss.

Both replace the paper's softmax with ``num_classes`` independent sigmoids (no "no object"
column). They are class scorings (:mod:`~detr_lightning.detr.class_scoring`): one object that
the class head, the matcher, the criterion and the post-processing share, set together by the
``cls_loss`` config group.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from detr_lightning.convergence.iou_aware_loss import paired_iou, varifocal_loss
from detr_lightning.detr.matched_pairs import MatchedPairs


class FocalScoring:
    """Sigmoid classification with the focal loss (Deformable DETR).

    Args:
        alpha, gamma: the focal loss's (and the matcher's focal class cost's).
        prior_prob: every class's probability at initialisation (the class head's bias), so
            that the many negatives do not swamp the loss at the start.
    """

    no_object = False
    needs_matched_boxes = False

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, prior_prob: float = 0.01) -> None:
        if not 0 < prior_prob < 1:
            raise ValueError(f"FocalScoring: prior_prob={prior_prob}; need 0 < prior_prob < 1.")
        self.alpha, self.gamma, self.prior_prob = alpha, gamma, prior_prob

    def num_logits(self, num_classes: int) -> int:
        return num_classes

    def init_class_head(self, head: nn.Module) -> None:
        """A class head's bias set to the logit of ``prior_prob``."""
        nn.init.constant_(head.bias, -math.log((1 - self.prior_prob) / self.prior_prob))

    def probabilities(self, logits: Tensor) -> Tensor:
        """[..., C] logits -> [..., C] sigmoid probabilities."""
        return logits.sigmoid()

    def match_cost(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Deformable DETR's class cost: logits [Q, C], labels [T] int64 -> [Q, T] focal loss of
        calling the query positive for the target's class minus that of calling it negative
        (lower = better match)."""
        prob = logits.sigmoid()
        # softplus(-x) = -log(sigmoid(x)) without the log(0) that the 1e-8 of the original guards
        pos = self.alpha * (1 - prob) ** self.gamma * F.softplus(-logits)
        neg = (1 - self.alpha) * prob**self.gamma * F.softplus(logits)
        return (pos - neg)[:, labels]

    def loss(
        self,
        logits: Tensor,
        pairs: MatchedPairs,
        labels: Tensor,
        num_boxes: Tensor,
        class_weight: Tensor,
        matched_boxes: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        """``loss_ce`` of L prediction sets: the sigmoid focal loss with one-hot targets on the
        matched queries and all-zero ones elsewhere, summed and divided by ``num_boxes``.

        Args:
            logits: [L, B, Q, C] class logits.
            pairs: the matched predictions of the L sets; labels: [M] their target classes.
            num_boxes: the batch's target count.
            class_weight, matched_boxes: unused (no "no object" column; classes only).
        Returns:
            [L] losses.
        """
        logits = logits.float()  # in float32 under bf16 or fp16 autocast
        onehot = torch.zeros_like(logits)
        onehot[pairs.layer, pairs.batch, pairs.query, labels] = 1.0
        loss = sigmoid_focal_loss(logits, onehot, self.alpha, self.gamma, reduction="none")
        return loss.flatten(1).sum(1) / num_boxes

    def is_object(self, logits: Tensor) -> Tensor:
        """[..., Q, C] -> [..., Q] bool: the best class's probability is above 0.5."""
        return logits.max(-1).values > 0

    def detections(self, logits: Tensor, top_k: int | None) -> tuple[Tensor, Tensor, Tensor]:
        """The top_k highest-scoring (query, class) pairs over all Q * C (None: Q of them), so
        one query may give several labels.

        Args:
            logits: [B, Q, C] class logits.
        Returns:
            scores, labels, query index, each [B, k] sorted by score.
        """
        num_classes = logits.shape[-1]
        flat = logits.sigmoid().flatten(1)
        scores, idx = flat.topk(min(top_k or logits.shape[1], flat.shape[1]), dim=1)
        return scores, idx % num_classes, idx // num_classes

    def demote(self, logits: Tensor, amount: Tensor) -> Tensor:
        """Logits [..., C] made less object-like by ``amount`` [..., 1] (>= 0): every class's
        logit lowered."""
        return logits - amount

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(alpha={self.alpha}, gamma={self.gamma}, "
            f"prior_prob={self.prior_prob})"
        )


class VarifocalScoring(FocalScoring):
    """IoU-aware sigmoid classification (VarifocalNet, RT-DETR): the focal scoring, with the
    matched class's target and weight equal to its box's IoU
    (:func:`~detr_lightning.convergence.iou_aware_loss.varifocal_loss`), so that scores rank
    boxes by their fit. Needs the criterion's "boxes" losses (the matched boxes)."""

    needs_matched_boxes = True

    def loss(
        self,
        logits: Tensor,
        pairs: MatchedPairs,
        labels: Tensor,
        num_boxes: Tensor,
        class_weight: Tensor,
        matched_boxes: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        """``loss_ce`` of L sets (arguments as :meth:`FocalScoring.loss`; ``matched_boxes``:
        the pairs' [M, 4] predicted and target cxcywh boxes) -> [L]."""
        ious = paired_iou(*matched_boxes)
        return varifocal_loss(logits, pairs, labels, ious, num_boxes, self.alpha, self.gamma)
