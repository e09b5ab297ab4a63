"""``nn.MultiheadAttention`` with a direct batch-first path to scaled-dot-product attention.

``nn.MultiheadAttention(batch_first=True)`` transposes its inputs to sequence-first, projects
query, key and value with three separate products when the key is not the value (DETR: key =
value + position), expands a key padding mask to a float [B * heads, 1, S] mask at every call,
and copies between layouts. :class:`MultiheadAttention` keeps the same parameters (and state
dict keys, so official checkpoints load) and, when no attention weights are asked for and no
``attn_mask`` is given, computes the same function batch-first: one product for query and key
when they are the same tensor (self-attention), heads as a view, the padding mask as a
broadcast boolean, ``F.scaled_dot_product_attention`` (fused kernels where the backend has
them) with the module's dropout in training. Any other call, e.g. with ``need_weights=True``
(the attention-map capture's forward pre-hook sets it), is the parent's. Module hooks fire
either way: the fast path is this module's own ``forward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MultiheadAttention(nn.MultiheadAttention):
    """Batch-first ``nn.MultiheadAttention`` with the fast path of the module docstring."""

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
        fast = (
            self.batch_first
            and not need_weights
            and attn_mask is None
            and not is_causal
            and self._qkv_same_embed_dim
            and self.in_proj_bias is not None
            and self.bias_k is None
            and (key_padding_mask is None or key_padding_mask.dtype == torch.bool)
        )
        if not fast:
            return super().forward(
                query, key, value, key_padding_mask, need_weights, attn_mask,
                average_attn_weights, is_causal,
            )  # fmt: skip
        return self._fast_forward(query, key, value, key_padding_mask), None

    def _fast_forward(
        self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None
    ) -> Tensor:
        """query [B, L, d], key/value [B, S, d], key_padding_mask [B, S] bool True = padding."""
        d, heads = self.embed_dim, self.num_heads
        w, b = self.in_proj_weight, self.in_proj_bias
        if query is key:  # self-attention: query and key from one product
            q, k = F.linear(query, w[: 2 * d], b[: 2 * d]).chunk(2, dim=-1)
        else:
            q = F.linear(query, w[:d], b[:d])
            k = F.linear(key, w[d : 2 * d], b[d : 2 * d])
        v = F.linear(value, w[2 * d :], b[2 * d :])

        def split(x: Tensor) -> Tensor:  # [B, n, d] -> [B, heads, n, d / heads], a view
            return x.unflatten(-1, (heads, d // heads)).transpose(1, 2)

        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(
            split(q), split(k), split(v), attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )  # fmt: skip
        return self.out_proj(out.transpose(1, 2).flatten(2))
