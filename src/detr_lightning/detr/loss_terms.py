"""The loss terms of DETR's set criterion on matched predictions, for L prediction sets of the
same queries at once (the decoder layers; :class:`~detr_lightning.detr.matched_pairs.MatchedPairs`):
the L1 and GIoU box losses and the logged class and cardinality errors. Each loss is one [L]
tensor, its entries as the single-set losses of the official code. The classification loss is
the class scoring's (:mod:`~detr_lightning.detr.class_scoring`), the mask terms are in
:mod:`~detr_lightning.detr.mask_losses`."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert

from detr_lightning.detr.matched_pairs import sum_per_set


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
        src, tgt: [M, 4] boxes, absolute or normalised xyxy (x1 <= x2, y1 <= y2); any shapes
            [..., 4] that broadcast against each other.
    Returns:
        ([M] intersections, [M] unions), or the broadcast shape without its last dimension.
    """
    low, high = torch.max(src[..., :2], tgt[..., :2]), torch.min(src[..., 2:], tgt[..., 2:])
    inter = _area((high - low).clamp(0))
    union = _area(src[..., 2:] - src[..., :2]) + _area(tgt[..., 2:] - tgt[..., :2]) - inter
    return inter, union


def _area(wh: Tensor) -> Tensor:  # not .prod(-1): its backward checks for zeros on the host
    return wh[..., 0] * wh[..., 1]


@torch.no_grad()
def cardinality_error(is_object: Tensor, targets: list[dict[str, Tensor]]) -> Tensor:
    """Mean over images of |#predicted objects - #targets|.

    Args:
        is_object: [..., B, Q] bool, the queries that predict an object (e.g. [L, B, Q]; the
            class scoring's ``is_object``); targets: B dicts with ``labels`` [T_b].
    Returns:
        [...] errors (a scalar for [B, Q]).
    """
    counts = torch.tensor([len(t["labels"]) for t in targets])  # host list: copy, no sync
    counts = counts.to(is_object.device, non_blocking=True)
    return (is_object.sum(-1).float() - counts.float()).abs().mean(-1)
