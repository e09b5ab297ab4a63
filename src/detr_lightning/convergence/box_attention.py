"""A spatial prior on the decoder's cross-attention around each query's reference box (SMCA,
Gao et al. 2021, "Fast Convergence of DETR with Spatially Modulated Co-Attention").

Why: with box refinement, each decoder layer should correct its box from the features in and
around it, but plain cross-attention must first learn where the box is from the positional
query alone; in a few epochs it barely does (docs/convergence.md: the decoder moved the matched
IoU from 0.707 to 0.712). Adding ``-s_h * ((x - cx)² / w² + (y - cy)² / h²)`` to head h's
attention logits of every memory token at (x, y) makes a query read its own box first: a
Gaussian in box-relative units, per head wider or narrower (``s_h`` learned, started on a
log-spaced range so some heads look at the box's centre and others at its surroundings).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from detr_lightning.convergence.dims import ModelDims


def real_extent(mask: Tensor) -> tuple[Tensor, Tensor]:
    """mask [B, h, w] bool True = real (padding at the bottom / right) -> the number of real
    columns and rows of each image's map, float [B] each."""
    real = mask.float()
    return real[:, 0, :].sum(-1), real[:, :, 0].sum(-1)


def token_centres(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Normalised centres of the tokens of a feature map, relative to each image's real extent
    (as the boxes are).

    Args:
        mask: [B, h, w] bool, True on real positions (padding at the bottom / right).
    Returns:
        x, y: [B, h * w] in [0, 1] on real positions (beyond 1 on padding, which is masked).
    """
    width, height = (n.clamp(min=1)[:, None, None] for n in real_extent(mask))  # [B, 1, 1]
    h, w = mask.shape[-2:]
    cols = torch.arange(w, device=mask.device, dtype=width.dtype) + 0.5
    rows = torch.arange(h, device=mask.device, dtype=width.dtype) + 0.5
    x = (cols[None, None, :] / width).expand(-1, h, -1)
    y = (rows[None, :, None] / height).expand(-1, -1, w)
    return x.flatten(1), y.flatten(1)


class BoxAttentionPrior(nn.Module):
    """The additive cross-attention bias of the module docstring, one learned scale per head.

    Args:
        dims: the model's sizes (``nhead``).
        min_scale, max_scale: the heads' initial scales ``s_h``, log-spaced. At the edge of the
            box (half a width from the centre) the bias is ``-s_h / 4``.
        min_size: boxes narrower than this (normalised) count as this wide, so a collapsed
            reference box cannot make the bias infinite.
    """

    def __init__(
        self,
        dims: ModelDims,
        min_scale: float = 0.5,
        max_scale: float = 16.0,
        min_size: float = 0.02,
    ) -> None:
        super().__init__()
        if not 0 < min_scale <= max_scale:
            raise ValueError(
                f"BoxAttentionPrior: need 0 < min_scale <= max_scale, got {min_scale}, "
                f"{max_scale} (model.net.attention_prior)."
            )
        start = torch.linspace(math.log(min_scale), math.log(max_scale), dims.nhead)
        self.log_scale = nn.Parameter(start)
        self.min_size = min_size

    def forward(self, boxes: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """Cross-attention bias of queries with reference boxes.

        Args:
            boxes: [B, N, 4] normalised cxcywh reference boxes.
            x, y: [B, S] token centres (:func:`token_centres`).
        Returns:
            [B * heads, N, S] float bias, the 3-D ``attn_mask`` of ``nn.MultiheadAttention``.
        """
        centre, size = boxes[..., None, :2], boxes[..., None, 2:].clamp(min=self.min_size)
        dx = (x[:, None, :] - centre[..., 0]) / size[..., 0]  # [B, N, S]
        dy = (y[:, None, :] - centre[..., 1]) / size[..., 1]
        distance = dx.square() + dy.square()
        bias = -self.log_scale.exp()[None, :, None, None] * distance[:, None]
        return bias.flatten(0, 1)
