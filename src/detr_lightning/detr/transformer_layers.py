"""The layers of DETR's transformer: post-norm (the paper) or pre-norm residual blocks around
``torch.nn.MultiheadAttention`` and an optional FFN, positions added to queries and keys.
Attention and dropout are the subclasses of :mod:`~detr_lightning.detr.multihead_attention`
and :mod:`~detr_lightning.detr.dropout`, which draw dropout masks faster on the CPU.

Batch-first [B, S, d]; masks True on real positions (``nn.MultiheadAttention`` takes the
opposite, hence the ``~`` at its calls). Parameter names are the official ones
(``self_attn``, ``multihead_attn``, ``linear1``, ``norm1``...), so official checkpoints load by
name.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detr_lightning.detr.dropout import Dropout
from detr_lightning.detr.multihead_attention import MultiheadAttention


def add_pos(x: Tensor, pos: Tensor | None) -> Tensor:
    """x + pos, or x when there is no position encoding."""
    return x if pos is None else x + pos


def _attention(d_model: int, nhead: int, dropout: float) -> MultiheadAttention:
    if d_model % nhead:
        raise ValueError(f"d_model ({d_model}) must be divisible by nhead ({nhead})")
    return MultiheadAttention(d_model, nhead, dropout=dropout)


class _Layer(nn.Module):
    """Shared pieces: residual sublayers (post- or pre-norm), the optional FFN and the
    self-attention sublayer (``self_attn``, ``norm1``) that both layers open with."""

    def __init__(
        self, d_model: int, nhead: int, dim_ff: int, dropout: float, pre: bool, use_ffn: bool
    ) -> None:
        super().__init__()
        self.normalize_before = pre
        self.use_ffn = use_ffn
        if use_ffn:
            self.linear1 = nn.Linear(d_model, dim_ff)
            self.dropout = Dropout(dropout)
            self.linear2 = nn.Linear(dim_ff, d_model)
        self.self_attn = _attention(d_model, nhead, dropout)
        self.norm1, self.dropout1 = nn.LayerNorm(d_model), Dropout(dropout)

    def _sublayer(
        self, x: Tensor, fn: Callable[[Tensor], Tensor], norm: nn.Module, drop: nn.Module
    ) -> Tensor:
        if self.normalize_before:
            return x + drop(fn(norm(x)))
        return norm(x + drop(fn(x)))

    def _ffn(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class TransformerEncoderLayer(_Layer):
    """Self-attention (+ position on q and k) and FFN; ``norm2`` belongs to the FFN."""

    def __init__(
        self, d_model: int, nhead: int, dim_ff: int = 2048, dropout: float = 0.1,
        pre: bool = False, use_ffn: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(d_model, nhead, dim_ff, dropout, pre, use_ffn)
        if use_ffn:
            self.norm2, self.dropout2 = nn.LayerNorm(d_model), Dropout(dropout)

    def forward(self, src: Tensor, key_padding_mask: Tensor, pos: Tensor | None) -> Tensor:
        """src/pos [B, S, d], key_padding_mask [B, S] True = real. Returns [B, S, d]."""

        def attend(x: Tensor) -> Tensor:
            qk = add_pos(x, pos)
            return self.self_attn(
                qk, qk, x, key_padding_mask=~key_padding_mask, need_weights=False
            )[0]

        src = self._sublayer(src, attend, self.norm1, self.dropout1)
        if self.use_ffn:
            src = self._sublayer(src, self._ffn, self.norm2, self.dropout2)
        return src


class TransformerDecoderLayer(_Layer):
    """Query self-attention, cross-attention to the memory, FFN (norm1, norm2, norm3)."""

    def __init__(
        self, d_model: int, nhead: int, dim_ff: int = 2048, dropout: float = 0.1,
        pre: bool = False, use_ffn: bool = True,
    ) -> None:  # fmt: skip
        super().__init__(d_model, nhead, dim_ff, dropout, pre, use_ffn)
        self.multihead_attn = _attention(d_model, nhead, dropout)
        self.norm2, self.dropout2 = nn.LayerNorm(d_model), Dropout(dropout)
        if use_ffn:
            self.norm3, self.dropout3 = nn.LayerNorm(d_model), Dropout(dropout)

    def forward(
        self,
        tgt: Tensor,
        memory: Tensor,
        memory_mask: Tensor,
        pos: Tensor | None,
        query_pos: Tensor | None,
        self_attn_mask: Tensor | None = None,
        memory_keys: Tensor | None = None,
        memory_bias: Tensor | None = None,
    ) -> Tensor:
        """tgt/query_pos [B, Q, d]; memory/pos [B, S, d]; memory_mask [B, S] True = real;
        self_attn_mask [Q, Q] True = blocked; memory_keys: memory + pos when the caller has
        it already (the decoder computes it once for all layers); memory_bias: [B * heads, Q,
        S] float added to the cross-attention logits, or None. Returns [B, Q, d]."""
        keys = add_pos(memory, pos) if memory_keys is None else memory_keys

        def self_attend(x: Tensor) -> Tensor:
            qk = add_pos(x, query_pos)
            return self.self_attn(qk, qk, x, attn_mask=self_attn_mask, need_weights=False)[0]

        padding = ~memory_mask
        if memory_bias is not None:  # a float padding mask beside a float bias (torch's rule)
            padding = torch.zeros_like(padding, dtype=memory_bias.dtype).masked_fill(
                padding, float("-inf")
            )

        def cross_attend(x: Tensor) -> Tensor:
            return self.multihead_attn(
                add_pos(x, query_pos),
                keys,
                memory,
                key_padding_mask=padding,
                need_weights=False,
                attn_mask=memory_bias,
            )[0]

        tgt = self._sublayer(tgt, self_attend, self.norm1, self.dropout1)
        tgt = self._sublayer(tgt, cross_attend, self.norm2, self.dropout2)
        if self.use_ffn:
            tgt = self._sublayer(tgt, self._ffn, self.norm3, self.dropout3)
        return tgt
