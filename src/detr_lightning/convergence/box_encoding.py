"""Box helpers shared by the query levers: sine encoding of boxes and the logit of a box."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def box_sine_embedding(boxes: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """Sine encoding of boxes [..., 4] (normalised cxcywh) into [..., dim], dim/4 per coordinate."""
    per_coord = dim // 4
    idx = torch.arange(per_coord, dtype=torch.float32, device=boxes.device)
    dim_t = temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / per_coord)
    angles = boxes[..., None].float() * 2 * math.pi / dim_t  # [..., 4, per_coord]
    emb = torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)
    return emb.flatten(-2).to(boxes.dtype)


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """logit of x [...] in [0, 1] (e.g. normalised cxcywh boxes), x clamped to [eps, 1 - eps] so
    that boxes on the image border give finite logits; the inverse of ``torch.sigmoid``."""
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))
