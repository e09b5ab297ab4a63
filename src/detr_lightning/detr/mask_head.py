"""The two modules of DETR's panoptic head (paper Sec. 4.4): per-query attention maps over the
encoder memory, and the FPN-style convolutional head turning them into mask logits.

Parameter names follow the official ``models/segmentation.py`` (``q_linear``, ``k_linear``,
``lay1``..``lay5``, ``gn1``..``gn5``, ``adapter1``..``adapter3``, ``out_lay``), so official
panoptic weights load by name. The head is generalised to any number of backbone levels: a
ResNet's layer1..layer4 gives exactly the official layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MHAttentionMap(nn.Module):
    """Multi-head attention weights (no values): every query attends over the memory's pixels.

    The softmax runs jointly over heads x pixels (one distribution per query, not one per head):
    that is what the official code does and what its checkpoints were trained with.

    Args:
        query_dim: width of the queries and of the memory (DETR's d).
        hidden_dim: width of the q/k projections (split over the heads).
        num_heads: attention heads; one map per head is returned.
        dropout: on the attention weights (the official panoptic model uses 0).
    """

    def __init__(
        self, query_dim: int, hidden_dim: int, num_heads: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if hidden_dim % num_heads:
            raise ValueError(f"MHAttentionMap: hidden_dim {hidden_dim} % num_heads {num_heads}")
        self.num_heads, self.hidden_dim = num_heads, hidden_dim
        self.q_linear = nn.Linear(query_dim, hidden_dim)
        self.k_linear = nn.Linear(query_dim, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        for lin in (self.q_linear, self.k_linear):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.scale = (hidden_dim / num_heads) ** -0.5

    def forward(self, queries: Tensor, memory: Tensor, mask: Tensor | None = None) -> Tensor:
        """
        Args:
            queries: [B, Q, query_dim] (the last decoder layer's output).
            memory: [B, query_dim, h, w] encoder output laid out as a feature map.
            mask: [B, h, w] bool, True on real pixels (None = no padding).
        Returns:
            [B, Q, num_heads, h, w] weights; for every query they sum to 1 over heads x pixels
            and are 0 on padding.
        """
        b, _, h, w = memory.shape
        c = self.hidden_dim // self.num_heads
        q = self.q_linear(queries).view(b, queries.shape[1], self.num_heads, c)
        k = self.k_linear(memory.flatten(2).transpose(1, 2)).view(b, h * w, self.num_heads, c)
        logits = torch.einsum("bqnc,bsnc->bqns", q * self.scale, k)
        if mask is not None:
            logits = logits.masked_fill(~mask.flatten(1)[:, None, None, :], float("-inf"))
        weights = logits.flatten(2).softmax(-1).view(b, queries.shape[1], self.num_heads, h, w)
        return self.dropout(weights)


def _groups(channels: int) -> int:
    """GroupNorm groups: 8 as official (all official widths are multiples of 8); a narrower
    model (d < 128) gets the largest divisor of its width that is <= 8."""
    return math.gcd(8, channels)


class MaskHeadSmallConv(nn.Module):
    """FPN-style mask head: 3x3 conv + GroupNorm + ReLU blocks, each coarser-to-finer step
    adding a 1x1 adapter of an earlier backbone level after nearest upsampling.

    Block widths: ``lay1`` keeps ``dim``, ``lay2`` gives ``context_dim / 2``, and the block after
    adapter i (1-based) gives ``context_dim / 2**(i + 1)``; ``out_lay`` gives 1 channel. With
    three adapters (a ResNet's layer3, layer2, layer1) this is the official head.

    Args:
        dim: input channels = d (projected features) + attention heads.
        fpn_dims: channels of the earlier backbone levels, coarsest first.
        context_dim: DETR's d; sets the block widths.
    """

    def __init__(self, dim: int, fpn_dims: Sequence[int], context_dim: int) -> None:
        super().__init__()
        self.num_levels = len(fpn_dims)
        widths = [dim] + [context_dim // 2**k for k in range(1, self.num_levels + 2)]
        if widths[-1] < 1:
            raise ValueError(
                f"MaskHeadSmallConv: context_dim {context_dim} is too small for "
                f"{self.num_levels} backbone levels (each halves the width)"
            )
        cin = dim
        for k, cout in enumerate(widths, start=1):
            setattr(self, f"lay{k}", nn.Conv2d(cin, cout, 3, padding=1))
            setattr(self, f"gn{k}", nn.GroupNorm(_groups(cout), cout))
            cin = cout
        self.out_lay = nn.Conv2d(cin, 1, 3, padding=1)
        for i, channels in enumerate(fpn_dims, start=1):
            setattr(self, f"adapter{i}", nn.Conv2d(channels, widths[i], 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def _block(self, k: int, x: Tensor) -> Tensor:
        return F.relu(getattr(self, f"gn{k}")(getattr(self, f"lay{k}")(x)))

    def forward(
        self,
        x: Tensor,
        attention: Tensor,
        fpns: Sequence[Tensor],
        batch_index: Tensor | None = None,
    ) -> Tensor:
        """
        Args:
            x: [B, d, h, w] projected last backbone level (DETR's input projection).
            attention: [B, Q, n, h, w] attention maps of :class:`MHAttentionMap`, or, with
                ``batch_index``, [N, n, h, w]: the maps of N selected queries.
            fpns: ``num_levels`` earlier backbone levels [B, C_i, h_i, w_i], coarsest first.
            batch_index: [N] int64, the image of each selected query (None: every query).
        Returns:
            [B * Q, 1, h_f, w_f] mask logits at the finest level's size, batch-major (with
            ``batch_index``: [N, 1, h_f, w_f], in the order of the selected queries).
        """
        if len(fpns) != self.num_levels:
            raise ValueError(f"MaskHeadSmallConv: got {len(fpns)} levels, built for "
                             f"{self.num_levels}")  # fmt: skip
        if batch_index is None:
            q = attention.shape[1]
            batch_index = torch.arange(x.shape[0], device=x.device).repeat_interleave(q)
            attention = attention.flatten(0, 1)
        # Every query gets its own copy of its image's features, its attention maps appended.
        x = torch.cat([x[batch_index], attention], dim=1)
        x = self._block(2, self._block(1, x))
        for i, fpn in enumerate(fpns, start=1):
            # The adapter runs once per image, before the per-query copies (Q times cheaper).
            lateral = getattr(self, f"adapter{i}")(fpn)[batch_index]
            x = lateral + F.interpolate(x, size=lateral.shape[-2:], mode="nearest")
            x = self._block(i + 2, x)
        return self.out_lay(x)
