"""``nn.MultiheadAttention`` whose CPU training step drops attention weights with the cheap
mask of :mod:`detr_lightning.detr.dropout`.

With ``dropout > 0`` in training, ``scaled_dot_product_attention`` on the CPU falls back to its
reference implementation and draws the attention-weight mask with ``bernoulli_``; this class
computes the same attention itself (batch-first, so no transposed copies of the inputs either)
and draws that mask as :func:`~detr_lightning.detr.dropout.dropout` does. Everywhere else
(evaluation, no dropout, ``need_weights=True``, another device, ONNX export) it is
``nn.MultiheadAttention`` unchanged: same parameters and state dict keys as the official code,
and forward hooks on ``nn.MultiheadAttention`` still see it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detr_lightning.detr.dropout import dropout


def _masked(logits: Tensor, mask: Tensor) -> Tensor:
    """``logits`` with ``mask`` applied as ``nn.MultiheadAttention`` reads it: a bool mask
    blocks where True, a float mask is added."""
    if mask.dtype == torch.bool:
        return logits.masked_fill(mask, float("-inf"))
    return logits + mask


class MultiheadAttention(nn.MultiheadAttention):
    """Batch-first ``nn.MultiheadAttention`` (module docstring). Args as its constructor's."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__(embed_dim, num_heads, dropout=dropout, batch_first=True)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        own = (
            self.training
            and self.dropout > 0.0
            and not need_weights
            and not is_causal
            and query.device.type == "cpu"
            and query.dim() == 3
            and (attn_mask is None or attn_mask.dim() == 2)  # per-head masks: torch's path
        )
        if not own:
            return super().forward(
                query, key, value, key_padding_mask, need_weights, attn_mask,
                average_attn_weights, is_causal,
            )  # fmt: skip
        return self.attend(query, key, value, key_padding_mask, attn_mask, self.dropout), None

    def attend(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None,
        attn_mask: Tensor | None,
        dropout_p: float,
    ) -> Tensor:
        """softmax(q kᵀ / √d_head + masks), dropped out at ``dropout_p``, times v, projected.

        Args:
            query: [B, L, d]; key, value: [B, S, d].
            key_padding_mask: [B, S] bool (True = padding, never attended) or float (added to
                the logits), or None.
            attn_mask: [L, S] bool (True = blocked) or float (added to the logits), or None.

        Returns:
            [B, L, d], as ``nn.MultiheadAttention(batch_first=True)`` returns it.
        """
        b, length, d = query.shape
        heads = self.num_heads
        head_dim = d // heads
        w, bias = self.in_proj_weight, self.in_proj_bias
        if query is key:  # self-attention: queries and keys from one product
            q, k = F.linear(query, w[: 2 * d], bias[: 2 * d]).split(d, dim=-1)
        else:
            q, k = F.linear(query, w[:d], bias[:d]), F.linear(key, w[d : 2 * d], bias[d : 2 * d])
        v = F.linear(value, w[2 * d :], bias[2 * d :])

        def split_heads(x: Tensor) -> Tensor:  # [B, n, d] -> [B, heads, n, d_head]
            return x.unflatten(-1, (heads, head_dim)).transpose(1, 2)

        q, k, v = split_heads(q * head_dim**-0.5), split_heads(k), split_heads(v)
        logits = q @ k.transpose(-2, -1)  # [B, heads, L, S]
        if key_padding_mask is not None:
            logits = _masked(logits, key_padding_mask[:, None, None, :])
        if attn_mask is not None:
            logits = _masked(logits, attn_mask)
        weights = dropout(logits.softmax(dim=-1), dropout_p)
        out = (weights @ v).transpose(1, 2).reshape(b, length, d)
        return F.linear(out, self.out_proj.weight, self.out_proj.bias)
