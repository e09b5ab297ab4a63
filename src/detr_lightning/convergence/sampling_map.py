"""Where bilinear reads land on a padded feature map: the real share of each image's map, and the
head-averaged map of the weights a set of reads puts on each pixel (the attention map that a
deformable read amounts to, as ``AttentionCapture`` draws it)."""

from __future__ import annotations

import torch
from torch import Tensor

from detr_lightning.convergence.box_attention import real_extent


def valid_ratios(mask: Tensor) -> Tensor:
    """mask [B, h, w] bool True = real (padding at the bottom / right) -> [B, 1, 2] the real
    share of the map's width and height, which maps a box coordinate (relative to the image's
    own extent) onto the padded map."""
    width, height = real_extent(mask)
    return torch.stack([width / mask.shape[-1], height / mask.shape[-2]], -1)[:, None]


def onto_padded_map(locations: Tensor, mask: Tensor) -> Tensor:
    """locations [B, Q, H, P, 2] (x, y relative to each image's own extent), mask [B, h, w] True =
    real -> the same points relative to the padded map, the extent ``grid_sample`` reads."""
    return locations * valid_ratios(mask)[:, :, None, None]


def sampling_weight_map(locations: Tensor, weights: Tensor, h: int, w: int) -> Tensor:
    """locations [B, Q, H, P, 2] (x, y relative to the padded map), weights [B, Q, H, P] ->
    [B, Q, h*w]: each read's bilinear weights times its weight, summed over its points and
    averaged over the heads (zero for reads outside the map, as ``grid_sample`` pads)."""
    b, q, heads = weights.shape[:3]
    weights = weights.to(locations.dtype)  # bf16 weights, float32 locations: one dtype to scatter
    x = locations[..., 0] * w - 0.5  # [B, Q, H, P] in map pixels, align_corners=False
    y = locations[..., 1] * h - 0.5
    x0, y0 = x.floor(), y.floor()
    dense = weights.new_zeros(b, q, h * w)
    for dx in (0, 1):
        for dy in (0, 1):
            cx, cy = x0 + dx, y0 + dy
            share = (1 - (x - cx).abs()) * (1 - (y - cy).abs()) * weights
            inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
            index = (cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)).long()
            dense.scatter_add_(-1, index.flatten(2), (share * inside).flatten(2))
    return dense / heads
