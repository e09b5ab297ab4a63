"""What the class head's logits mean: the paper's softmax over the classes and "no object".

A class scoring is the one object that the detector's class head, the matcher's class cost,
the criterion's ``loss_ce``, the cardinality error and the post-processing share, so that they
cannot disagree on the logits' layout. :class:`SoftmaxScoring` is the paper's. An extension
supplies another with the same attributes and methods (the sigmoid focal scoring of
:mod:`~detr_lightning.convergence.focal_scoring`) through the ``scoring`` argument of
:class:`~detr_lightning.detr.set_detector.SetDetector`,
:class:`~detr_lightning.detr.matcher.HungarianMatcher`,
:class:`~detr_lightning.detr.criterion.SetCriterion` and the post-processors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

if TYPE_CHECKING:  # matched_pairs -> matcher -> this module
    from detr_lightning.detr.matched_pairs import MatchedPairs


class SoftmaxScoring:
    """The paper's classification: ``num_classes + 1`` logits, the last "no object", softmax.

    Attributes:
        no_object: the logits have a "no object" column (last); the criterion's ``eos_coef``
            weighs it.
        needs_matched_boxes: the loss reads the matched boxes (False: it reads classes only).
    """

    no_object = True
    needs_matched_boxes = False

    def num_logits(self, num_classes: int) -> int:
        """Class-logit columns for ``num_classes`` real classes."""
        return num_classes + 1

    def init_class_head(self, head: nn.Module) -> None:
        """Start of a freshly initialised class head (a Linear or conv with a bias): torch's
        default, as the paper."""

    def probabilities(self, logits: Tensor) -> Tensor:
        """[..., C + 1] logits -> [..., C] probabilities of the real classes (the softmax
        without its "no object" column)."""
        return logits.softmax(-1)[..., :-1]

    def match_cost(self, logits: Tensor, labels: Tensor) -> Tensor:
        """The matcher's class cost: logits [Q, C + 1], labels [T] int64 -> [Q, T]
        ``-p(target class)`` (lower = better match)."""
        return -logits.softmax(-1)[:, labels]

    def loss(
        self,
        logits: Tensor,
        pairs: MatchedPairs,
        labels: Tensor,
        num_boxes: Tensor,
        class_weight: Tensor,
        matched_boxes: tuple[Tensor, Tensor] | None,
    ) -> Tensor:
        """``loss_ce`` of L prediction sets: the class-weighted mean cross-entropy, unmatched
        queries targeting "no object".

        Args:
            logits: [L, B, Q, C + 1] class logits.
            pairs: the matched predictions of the L sets; labels: [M] their target classes.
            num_boxes: the batch's target count (unused by the softmax loss, a weighted mean).
            class_weight: [C + 1] class weights, ``eos_coef`` last.
            matched_boxes: the pairs' [M, 4] predicted and target cxcywh boxes (unused here).
        Returns:
            [L] losses.
        """
        return softmax_class_loss(logits, pairs, labels, class_weight)

    def is_object(self, logits: Tensor) -> Tensor:
        """[..., Q, C + 1] logits -> [..., Q] bool: the argmax is not "no object"."""
        return logits.argmax(-1) != logits.shape[-1] - 1

    def detections(self, logits: Tensor, top_k: int | None) -> tuple[Tensor, Tensor, Tensor]:
        """One detection per query: its best *real* class, even when "no object" wins (what
        official DETR does, worth ~2 AP).

        Args:
            logits: [B, Q, C + 1] class logits.
            top_k: keep the top_k highest-scoring queries, sorted by score (None: all Q, in
                query order).
        Returns:
            scores, labels, query index, each [B, k].
        """
        scores, labels = self.probabilities(logits).max(-1)
        if top_k is None:
            query = torch.arange(scores.shape[1], device=scores.device).expand_as(scores)
            return scores, labels, query
        scores, query = scores.topk(min(top_k, scores.shape[1]), dim=1)
        return scores, labels.gather(1, query), query

    def demote(self, logits: Tensor, amount: Tensor) -> Tensor:
        """Logits [..., C + 1] made less object-like by ``amount`` [..., 1] (>= 0): the "no
        object" column is raised."""
        return torch.cat([logits[..., :-1], logits[..., -1:] + amount], dim=-1)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def scoring_or_default(scoring: SoftmaxScoring | None) -> SoftmaxScoring:
    """``scoring``, or the paper's softmax scoring for None (every ``scoring`` argument's
    default)."""
    return SoftmaxScoring() if scoring is None else scoring


def scoring_of(part: object) -> SoftmaxScoring:
    """The class scoring of a model part (detector, panoptic wrapper, matcher, criterion,
    post-processing); the paper's for one that names none."""
    return scoring_or_default(getattr(part, "scoring", None))


def softmax_class_loss(
    logits: Tensor, pairs: MatchedPairs, labels: Tensor, class_weight: Tensor
) -> Tensor:
    """The paper's ``loss_ce`` of every prediction set: class-weighted mean cross-entropy, the
    unmatched queries targeting "no object".

    Args:
        logits: [L, B, Q, C + 1] class logits, "no object" last.
        pairs: the matched predictions of the L sets.
        labels: [M] target class of each pair.
        class_weight: [C + 1] class weights (``eos_coef`` last).
    Returns:
        [L] losses.
    """
    logits = logits.float()  # the softmax in float32 under bf16 or fp16 autocast
    no_object = logits.shape[-1] - 1
    target = torch.full(logits.shape[:-1], no_object, dtype=torch.int64, device=logits.device)
    target[pairs.layer, pairs.batch, pairs.query] = labels
    weight = class_weight.to(logits)
    # PyTorch's class-weighted mean, per set: sum(w_i * ce_i) / sum(w_i)
    weighted = F.cross_entropy(logits.flatten(0, -2), target.flatten(), weight, reduction="none")
    num_sets = logits.shape[0]
    return weighted.view(num_sets, -1).sum(1) / weight[target].view(num_sets, -1).sum(1)
