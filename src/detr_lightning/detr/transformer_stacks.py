"""The encoder and decoder stacks of DETR's transformer, and the decoder's one extension point.

``layer_hook`` (:class:`DecoderLayerHook`), called before every decoder layer, may replace the
positional queries (box refinement computes them from each layer's boxes) and add a bias to
that layer's cross-attention logits (a spatial prior around each query's box). The paper's
model does not use it.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor, nn

from detr_lightning.detr.transformer_layers import add_pos


class DecoderLayerHook(Protocol):
    """Called before decoder layer ``index`` with the previous layer's normed output
    ``hidden`` [B, Q, d] (None before the first); returns the positional queries [B, Q, d] that
    layer uses (or None to keep the current ones). :meth:`memory_bias` then gives that layer's
    cross-attention bias."""

    def __call__(self, index: int, hidden: Tensor | None) -> Tensor | None: ...

    def memory_bias(self) -> Tensor | None:
        """[B * heads, Q, S] float added to the coming layer's cross-attention logits, or
        None."""
        ...


class TransformerEncoder(nn.Module):
    def __init__(self, layers: list[nn.Module], norm: nn.Module | None) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(self, src: Tensor, key_padding_mask: Tensor, pos: Tensor | None) -> Tensor:
        """src/pos [B, S, d] (S = h * w tokens); key_padding_mask [B, S] bool, True = real pixel
        (as ``pixel_mask``; the layers invert it for ``nn.MultiheadAttention``). Returns
        [B, S, d], through the final norm when there is one."""
        for layer in self.layers:
            src = layer(src, key_padding_mask, pos)
        return src if self.norm is None else self.norm(src)


class TransformerDecoder(nn.Module):
    def __init__(self, layers: list[nn.Module], norm: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.norm = norm

    def forward(
        self, tgt: Tensor, memory: Tensor, memory_mask: Tensor, pos: Tensor | None,
        query_pos: Tensor | None, mask: Tensor | None = None,
        layer_hook: DecoderLayerHook | None = None,
    ) -> Tensor:  # fmt: skip
        """Shapes as in TransformerDecoderLayer. Returns [L, B, Q, d]: every layer's output
        through the one shared final norm. ``layer_hook``: see :class:`DecoderLayerHook`."""
        outputs: list[Tensor] = []
        keys = add_pos(memory, pos)  # the same for every layer
        bias = None
        for i, layer in enumerate(self.layers):
            if layer_hook is not None:
                new_pos = layer_hook(i, outputs[-1] if outputs else None)
                query_pos = query_pos if new_pos is None else new_pos
                bias = layer_hook.memory_bias()
            tgt = layer(tgt, memory, memory_mask, pos, query_pos, mask, keys, bias)
            outputs.append(self.norm(tgt))
        return torch.stack(outputs)
