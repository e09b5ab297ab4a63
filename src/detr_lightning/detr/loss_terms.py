"""The loss terms of DETR's set criterion on matched predictions: classification (softmax
cross-entropy with a down-weighted "no object" class, or the sigmoid focal loss), the L1 and
GIoU box losses, and the logged class and cardinality errors. The mask terms are in
:mod:`~detr_lightning.detr.mask_losses`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_convert, sigmoid_focal_loss


def label_losses(
    logits: Tensor,
    matched: tuple[Tensor, Tensor],
    labels: Tensor,
    num_boxes: Tensor,
    empty_weight: Tensor,
    focal: bool = False,
    alpha: float = 0.25,
    gamma: float = 2.0,
    log: bool = True,
) -> dict[str, Tensor]:
    """``loss_ce`` (and, with ``log``, ``class_error`` in %) of one set of predictions.

    Args:
        logits: [B, Q, K] class logits; K = classes + 1 ("no object" last) for softmax, the
            classes for focal.
        matched: (batch index [M], query index [M]) of the matched predictions.
        labels: [M] target class of each matched prediction.
        num_boxes: the focal loss's normaliser (the batch's target count).
        empty_weight: [classes + 1] softmax class weights (``eos_coef`` last); unused by focal.
        focal: sigmoid focal loss: one-hot targets on the matched queries, all-zero elsewhere,
            summed and divided by ``num_boxes``; else the class-weighted mean cross-entropy.
    """
    logits = logits.float()  # softmax / focal loss in float32 under bf16 or fp16 autocast
    if focal:
        onehot = torch.zeros_like(logits)
        onehot[matched + (labels,)] = 1.0
        loss = sigmoid_focal_loss(logits, onehot, alpha, gamma, reduction="sum")
        out = {"loss_ce": loss / num_boxes}
    else:
        target = torch.full(
            logits.shape[:2], logits.shape[-1] - 1, dtype=torch.int64, device=logits.device
        )
        target[matched] = labels
        # mean weighted by class weight (PyTorch's reduction): sum(w_i * ce_i) / sum(w_i)
        loss = F.cross_entropy(logits.transpose(1, 2), target, empty_weight.to(logits))
        out = {"loss_ce": loss}
    if log:
        with torch.no_grad():
            # official DETR convention: 100 % error when nothing is matched (never NaN)
            correct = (logits[matched].argmax(-1) == labels).float()
            acc = correct.mean() * 100 if correct.numel() else correct.new_zeros(())
            out["class_error"] = 100 - acc
    return out


def box_losses(src: Tensor, tgt: Tensor, num_boxes: Tensor) -> dict[str, Tensor]:
    """``loss_bbox`` (L1) and ``loss_giou``, each summed and divided by ``num_boxes``.

    Args:
        src, tgt: [M, 4] matched predicted / target boxes, normalised cxcywh.
    """
    src, tgt = src.float(), tgt.float()  # GIoU's divisions in float32 under autocast
    loss_bbox = F.l1_loss(src, tgt, reduction="sum") / num_boxes
    # element-wise GIoU (linear in M) instead of the diagonal of an M x M matrix
    giou = giou_loss_sum(box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"))
    return {"loss_bbox": loss_bbox, "loss_giou": giou / num_boxes}


def giou_loss_sum(src: Tensor, tgt: Tensor, eps: float = 1e-7) -> Tensor:
    """Sum over i of 1 - GIoU(src[i], tgt[i]), as ``torchvision.ops.generalized_box_iou_loss``
    with ``reduction="sum"`` (same eps), without host syncs: torchvision's boolean-mask indexing
    costs a device sync per masked index on a GPU, five per decoder layer and as many again in
    the backward.

    Args:
        src, tgt: [M, 4] boxes, absolute or normalised xyxy (x1 <= x2, y1 <= y2).
    """

    def area(wh: Tensor) -> Tensor:  # not .prod(-1): its backward checks for zeros on the host
        return wh[:, 0] * wh[:, 1]

    inter = area((torch.min(src[:, 2:], tgt[:, 2:]) - torch.max(src[:, :2], tgt[:, :2])).clamp(0))
    union = area(src[:, 2:] - src[:, :2]) + area(tgt[:, 2:] - tgt[:, :2]) - inter
    hull = area(torch.max(src[:, 2:], tgt[:, 2:]) - torch.min(src[:, :2], tgt[:, :2]))
    giou = inter / (union + eps) - (hull - union) / (hull + eps)
    return (1 - giou).sum()


@torch.no_grad()
def cardinality_error(logits: Tensor, targets: list[dict[str, Tensor]], focal: bool) -> Tensor:
    """Mean over images of |#predicted objects - #targets|; a query predicts an object when
    its argmax is not "no object" (softmax) or its best sigmoid probability is > 0.5 (focal).

    Args:
        logits: [B, Q, K] class logits; targets: B dicts with ``labels`` [T_b].
    """
    if focal:
        is_object = logits.max(-1).values > 0
    else:
        is_object = logits.argmax(-1) != logits.shape[-1] - 1
    counts = torch.tensor([len(t["labels"]) for t in targets])  # host list: copy, no sync
    counts = counts.to(logits.device, non_blocking=True)
    return F.l1_loss(is_object.sum(1).float(), counts.float())
