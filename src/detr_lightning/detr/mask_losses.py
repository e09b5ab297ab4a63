"""DETR's mask losses (paper Sec. 4.4): sigmoid focal loss and DICE loss on matched masks.

Both follow the official ``models/segmentation.py`` normalisation: per mask, the focal loss is
averaged over pixels and the DICE loss is ``1 - (2 |p t| + 1) / (|p| + |t| + 1)``; both are
summed over masks and divided by ``num_boxes`` (the batch's target count, as the box losses).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss


def focal_mask_loss(
    logits: Tensor, targets: Tensor, num_boxes: Tensor | float, alpha: float = 0.25,
    gamma: float = 2.0,
) -> Tensor:  # fmt: skip
    """logits, targets: [N, P] (N masks of P pixels; targets 0/1 float) -> scalar
    ``sum_n mean_p focal(n, p) / num_boxes``."""
    loss = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="none")
    return loss.mean(1).sum() / num_boxes


def dice_loss(logits: Tensor, targets: Tensor, num_boxes: Tensor | float) -> Tensor:
    """logits, targets: [N, P] -> scalar ``sum_n (1 - (2 |p t| + 1) / (|p| + |t| + 1)) /
    num_boxes`` with p = sigmoid(logits); the +1 keeps an empty target with an empty prediction
    at a loss of 0."""
    prob = logits.sigmoid()
    numerator = 2 * (prob * targets).sum(1)
    denominator = prob.sum(1) + targets.sum(1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_boxes


def pad_target_masks(masks: list[Tensor]) -> Tensor:
    """Per-image target masks [T_i, H_i, W_i] -> [sum T_i, H, W] float, zero-padded at the
    bottom/right to the largest H, W (collate already pads to the batch's canvas; this covers
    targets that were not collated)."""
    height = max(m.shape[-2] for m in masks)
    width = max(m.shape[-1] for m in masks)
    if all(m.shape[-2:] == (height, width) for m in masks):
        return torch.cat(masks).float()
    return torch.cat(
        [F.pad(m.float(), (0, width - m.shape[-1], 0, height - m.shape[-2])) for m in masks]
    )


def mask_losses(
    pred_masks: Tensor,
    matched: tuple[Tensor, Tensor],
    target_masks: list[Tensor],
    num_boxes: Tensor | float,
) -> dict[str, Tensor]:
    """``loss_mask`` (focal) and ``loss_dice`` of the matched predictions.

    Args:
        pred_masks: [B, Q, h, w] mask logits on the padded canvas (at any resolution).
        matched: (batch index [K], query index [K]) of the matched predictions.
        target_masks: per image, its matched targets' masks [K_i, H, W] (bool or 0/1), in the
            order of ``matched``, at the padded canvas size.
        num_boxes: normaliser (clamped >= 1 by the caller).
    Returns:
        ``{"loss_mask": scalar, "loss_dice": scalar}``.
    """
    src = pred_masks[matched]
    tgt = pad_target_masks(target_masks).to(src.dtype)
    if src.shape[0] == 0:
        zero = src.sum() * 0  # keeps the graph (and DDP's gradient buckets) connected
        return {"loss_mask": zero, "loss_dice": zero}
    # Predictions go up to the target's size (bilinear, as official), not targets down.
    src = F.interpolate(src[:, None], size=tgt.shape[-2:], mode="bilinear", align_corners=False)
    src, tgt = src.flatten(1), tgt.flatten(1)
    return {
        "loss_mask": focal_mask_loss(src, tgt, num_boxes),
        "loss_dice": dice_loss(src, tgt, num_boxes),
    }
