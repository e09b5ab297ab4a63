"""The loss terms of DETR's set criterion on matched predictions, for L prediction sets of the
same queries at once (the decoder layers; :class:`~detr_lightning.detr.matched_pairs.MatchedPairs`):
classification (softmax cross-entropy with a down-weighted "no object" class, or the sigmoid
focal loss), the L1 and GIoU box losses, and the logged class and cardinality errors. Each
loss is one [L] tensor, its entries as the single-set losses of the official code. The mask
terms are in :mod:`~detr_lightning.detr.mask_losses`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert, sigmoid_focal_loss

from detr_lightning.detr.matched_pairs import MatchedPairs, sum_per_set


def class_loss(
    logits: Tensor,
    pairs: MatchedPairs,
    labels: Tensor,
    num_boxes: Tensor,
    empty_weight: Tensor,
    focal: bool = False,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> Tensor:
    """``loss_ce`` of every prediction set.

    Args:
        logits: [L, B, Q, K] class logits; K = classes + 1 ("no object" last) for softmax, the
            classes for focal.
        pairs: the matched predictions of the L sets.
        labels: [M] target class of each pair.
        num_boxes: the focal loss's normaliser (the batch's target count).
        empty_weight: [classes + 1] softmax class weights (``eos_coef`` last); unused by focal.
        focal: sigmoid focal loss: one-hot targets on the matched queries, all-zero elsewhere,
            summed and divided by ``num_boxes``; else the class-weighted mean cross-entropy.
    Returns:
        [L] losses.
    """
    logits = logits.float()  # softmax / focal loss in float32 under bf16 or fp16 autocast
    matched = (pairs.layer, pairs.batch, pairs.query)
    if focal:
        onehot = torch.zeros_like(logits)
        onehot[matched + (labels,)] = 1.0
        loss = sigmoid_focal_loss(logits, onehot, alpha, gamma, reduction="none")
        return loss.flatten(1).sum(1) / num_boxes
    no_object = logits.shape[-1] - 1
    target = torch.full(logits.shape[:-1], no_object, dtype=torch.int64, device=logits.device)
    target[matched] = labels
    weight = empty_weight.to(logits)
    # PyTorch's class-weighted mean, per set: sum(w_i * ce_i) / sum(w_i)
    weighted = F.cross_entropy(logits.flatten(0, -2), target.flatten(), weight, reduction="none")
    num_sets = logits.shape[0]
    return weighted.view(num_sets, -1).sum(1) / weight[target].view(num_sets, -1).sum(1)


@torch.no_grad()
def class_error(matched_logits: Tensor, labels: Tensor) -> Tensor:
    """Logged ``class_error`` in %: matched_logits [M, K], labels [M] -> scalar; 100 % when
    nothing is matched (the official convention, never NaN)."""
    correct = (matched_logits.argmax(-1) == labels).float()
    acc = correct.mean() * 100 if correct.numel() else correct.new_zeros(())
    return 100 - acc


def box_losses(src: Tensor, tgt: Tensor, sizes: list[int], num_boxes: Tensor) -> dict[str, Tensor]:
    """``loss_bbox`` (L1) and ``loss_giou`` of every prediction set, each summed over the set's
    pairs and divided by ``num_boxes``.

    Args:
        src, tgt: [M, 4] matched predicted / target boxes, normalised cxcywh, layer-major.
        sizes: pairs per set (:attr:`MatchedPairs.sizes`).
    Returns:
        {"loss_bbox": [L], "loss_giou": [L]}.
    """
    src, tgt = src.float(), tgt.float()  # GIoU's divisions in float32 under autocast
    l1 = (src - tgt).abs().sum(-1)
    giou = giou_loss(box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"))
    per_set = sum_per_set(torch.stack([l1, giou], 1), sizes) / num_boxes
    return {"loss_bbox": per_set[:, 0], "loss_giou": per_set[:, 1]}


def giou_loss(src: Tensor, tgt: Tensor, eps: float = 1e-7) -> Tensor:
    """1 - GIoU(src[i], tgt[i]) for every pair, as ``torchvision.ops.generalized_box_iou_loss``
    with ``reduction="none"`` (same eps), without host syncs: torchvision's boolean-mask
    indexing costs a device sync per masked index on a GPU, five per call and as many again in
    the backward.

    Args:
        src, tgt: [M, 4] boxes, absolute or normalised xyxy (x1 <= x2, y1 <= y2).
    Returns:
        [M] losses.
    """
    inter, union = paired_inter_union(src, tgt)
    hull = _area(torch.max(src[:, 2:], tgt[:, 2:]) - torch.min(src[:, :2], tgt[:, :2]))
    return 1 - (inter / (union + eps) - (hull - union) / (hull + eps))


def paired_inter_union(src: Tensor, tgt: Tensor) -> tuple[Tensor, Tensor]:
    """Intersection and union areas of ``src[i]`` with ``tgt[i]`` (not all pairs, as
    ``torchvision.ops.box_iou``), without host syncs.

    Args:
        src, tgt: [M, 4] boxes, absolute or normalised xyxy (x1 <= x2, y1 <= y2).
    Returns:
        ([M] intersections, [M] unions).
    """
    inter = _area((torch.min(src[:, 2:], tgt[:, 2:]) - torch.max(src[:, :2], tgt[:, :2])).clamp(0))
    union = _area(src[:, 2:] - src[:, :2]) + _area(tgt[:, 2:] - tgt[:, :2]) - inter
    return inter, union


def _area(wh: Tensor) -> Tensor:  # not .prod(-1): its backward checks for zeros on the host
    return wh[:, 0] * wh[:, 1]


@torch.no_grad()
def cardinality_error(logits: Tensor, targets: list[dict[str, Tensor]], focal: bool) -> Tensor:
    """Mean over images of |#predicted objects - #targets|; a query predicts an object when
    its argmax is not "no object" (softmax) or its best sigmoid probability is > 0.5 (focal).

    Args:
        logits: [..., B, Q, K] class logits (e.g. [L, B, Q, K]); targets: B dicts with
            ``labels`` [T_b].
    Returns:
        [...] errors (a scalar for [B, Q, K]).
    """
    if focal:
        is_object = logits.max(-1).values > 0
    else:
        is_object = logits.argmax(-1) != logits.shape[-1] - 1
    counts = torch.tensor([len(t["labels"]) for t in targets])  # host list: copy, no sync
    counts = counts.to(logits.device, non_blocking=True)
    return (is_object.sum(-1).float() - counts.float()).abs().mean(-1)
