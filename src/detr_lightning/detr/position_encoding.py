"""Spatial position encodings for DETR feature maps (sine and learned), as in the paper."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class PositionEmbeddingSine(nn.Module):
    """Fixed 2-D sine encoding over the real (unpadded) part of a feature map.

    Row and column coordinates are the running counts of real pixels along each axis; with
    ``normalize`` they are divided by the real height/width and multiplied by ``scale``, so that
    an image's encoding does not depend on how much padding the batch added.
    """

    def __init__(
        self,
        num_pos_feats: int = 128,
        temperature: float = 10000,
        normalize: bool = True,
        scale: float | None = None,
    ) -> None:
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("PositionEmbeddingSine: scale is only used with normalize=True")
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, mask: Tensor) -> Tensor:
        """Encode positions.

        Args:
            mask: [B, h, w] bool, True on real positions.

        Returns:
            [B, 2 * num_pos_feats, h, w] float32: the first half encodes y, the second x; within
            each half channels alternate sin, cos.
        """
        y = mask.cumsum(1, dtype=torch.float32)
        x = mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y = y / (y[:, -1:, :] + eps) * self.scale
            x = x / (x[:, :, -1:] + eps) * self.scale
        idx = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (
            2 * torch.div(idx, 2, rounding_mode="floor") / self.num_pos_feats
        )

        def encode(coord: Tensor) -> Tensor:
            angles = coord[..., None] / dim_t
            return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=4).flatten(3)

        return torch.cat((encode(y), encode(x)), dim=3).permute(0, 3, 1, 2)


class PositionEmbeddingLearned(nn.Module):
    """Learned absolute encoding: one embedding per row and per column (at most 50 of each)."""

    def __init__(self, num_pos_feats: int = 128, max_size: int = 50) -> None:
        super().__init__()
        self.row_embed = nn.Embedding(max_size, num_pos_feats)
        self.col_embed = nn.Embedding(max_size, num_pos_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, mask: Tensor) -> Tensor:
        """Encode positions.

        Args:
            mask: [B, h, w] bool (only its shape and device are used).

        Returns:
            [B, 2 * num_pos_feats, h, w]: the first half encodes x (columns), the second y (rows),
            in the order of official DETR so that its learned checkpoints load.
        """
        b, h, w = mask.shape
        limit = self.row_embed.num_embeddings
        if h > limit or w > limit:
            raise ValueError(
                f"PositionEmbeddingLearned supports feature maps up to {limit}x{limit}, got {h}x{w};"
                " use smaller images or position_embedding=sine"
            )
        cols = self.col_embed(torch.arange(w, device=mask.device))
        rows = self.row_embed(torch.arange(h, device=mask.device))
        pos = torch.cat((cols[None].expand(h, w, -1), rows[:, None].expand(h, w, -1)), dim=-1)
        return pos.permute(2, 0, 1)[None].expand(b, -1, -1, -1)


def build_position_encoding(kind: str = "sine", hidden_dim: int = 256) -> nn.Module:
    """Position encoding with ``hidden_dim`` output channels: ``"sine"`` or ``"learned"``."""
    if kind == "sine":
        return PositionEmbeddingSine(hidden_dim // 2, normalize=True)
    if kind == "learned":
        return PositionEmbeddingLearned(hidden_dim // 2)
    raise ValueError(f"position_embedding must be 'sine' or 'learned', got '{kind}'")
