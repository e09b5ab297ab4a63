"""DETR encoder-decoder transformer with positions added to queries/keys at every layer.

Attention is ``torch.nn.MultiheadAttention`` (what the official code uses, so official
checkpoint keys such as ``encoder.layers.N.self_attn.in_proj_weight`` and ``decoder.norm.weight``
map one to one; it runs scaled-dot-product attention). Sequences are batch-first [B, S, d]
inside this module (the official code is sequence-first; the numbers are the same). Masks are
True on real positions, as everywhere in this project; ``nn.MultiheadAttention`` takes the
opposite, hence the ``~`` at its calls.

The encoder and decoder stacks, and the decoder's extension point ``layer_hook``
(:class:`~detr_lightning.detr.transformer_stacks.DecoderLayerHook`), are in
:mod:`~detr_lightning.detr.transformer_stacks`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from detr_lightning.detr.transformer_layers import TransformerDecoderLayer, TransformerEncoderLayer
from detr_lightning.detr.transformer_stacks import (
    DecoderLayerHook,
    TransformerDecoder,
    TransformerEncoder,
)

_POS_CHOICES = ("attn", "input", "none")


class Transformer(nn.Module):
    """DETR's encoder-decoder. Every ablation of the paper is a constructor argument.

    Args:
        d_model, nhead, dim_feedforward, dropout: sizes and dropout of every layer.
        num_encoder_layers: 0 makes the memory the (projected) backbone features.
        num_decoder_layers: >= 1.
        normalize_before: pre-norm layers (and a final encoder norm, as in official DETR).
        use_ffn: False drops every layer's feed-forward block.
        encoder_pos: spatial encoding in the encoder: "attn" (added to q and k of every layer),
            "input" (added once to the encoder input) or "none".
        decoder_pos: spatial encoding on the keys of the decoder cross-attention: "attn", "input"
            (added once to the memory the decoder reads, keys and values) or "none".
        query_pos: object-query embedding: "attn" (added to the decoder queries and
            self-attention keys at every layer) or "input" (added once to the decoder input).
    """

    def __init__(
        self,
        d_model: int = 256,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        normalize_before: bool = False,
        use_ffn: bool = True,
        encoder_pos: str = "attn",
        decoder_pos: str = "attn",
        query_pos: str = "attn",
    ) -> None:
        super().__init__()
        for name, value, choices in (
            ("encoder_pos", encoder_pos, _POS_CHOICES),
            ("decoder_pos", decoder_pos, _POS_CHOICES),
            ("query_pos", query_pos, _POS_CHOICES[:2]),
        ):
            if value not in choices:
                raise ValueError(f"Transformer: {name}='{value}' must be one of {choices}")
        if num_encoder_layers < 0 or num_decoder_layers < 1:
            raise ValueError(
                "Transformer: need num_encoder_layers >= 0 and num_decoder_layers >= 1"
            )
        args = (d_model, nhead, dim_feedforward, dropout, normalize_before, use_ffn)
        enc = [TransformerEncoderLayer(*args) for _ in range(num_encoder_layers)]
        dec = [TransformerDecoderLayer(*args) for _ in range(num_decoder_layers)]
        self.encoder = TransformerEncoder(enc, nn.LayerNorm(d_model) if normalize_before else None)
        self.decoder = TransformerDecoder(dec, nn.LayerNorm(d_model))
        self.d_model, self.nhead = d_model, nhead
        self.encoder_pos, self.decoder_pos, self.query_pos = encoder_pos, decoder_pos, query_pos
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(
        self,
        src: Tensor,
        mask: Tensor,
        query_embed: Tensor,
        pos: Tensor | None,
        tgt: Tensor | None = None,
        self_attn_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Encode the feature map and decode the object queries.

        Args:
            src: [B, d, h, w] projected backbone features.
            mask: [B, h, w] bool, True on real positions (padding is never attended to).
            query_embed: [Q, d] or [B, Q, d] object-query embedding.
            pos: [B, d, h, w] spatial encoding (may be None only when no *_pos uses it).
            tgt: [B, Q, d] initial decoder content; default zeros.
            self_attn_mask: [Q, Q] bool, True = query i may NOT attend to query j.

        Returns:
            hs: [L, B, Q, d] every decoder layer's output after the shared final LayerNorm.
            memory: [B, d, h, w] encoder output.
        """
        b, d, h, w = src.shape
        memory, key_mask, pos_seq = self.encode(src, mask, pos)
        if query_embed.dim() == 2:
            query_embed = query_embed.unsqueeze(0).expand(b, -1, -1)
        hs = self.decode(memory, key_mask, pos_seq, query_embed, tgt, self_attn_mask)
        return hs, memory.transpose(1, 2).reshape(b, d, h, w)

    def decode(
        self,
        memory: Tensor,
        key_mask: Tensor,
        pos_seq: Tensor | None,
        query_pos: Tensor | None,
        tgt: Tensor | None = None,
        self_attn_mask: Tensor | None = None,
        layer_hook: DecoderLayerHook | None = None,
    ) -> Tensor:
        """Decode queries against an encoded memory (the output of :meth:`encode`).

        Args:
            memory: [B, S, d]; key_mask: [B, S] bool True = real; pos_seq: [B, S, d] or None.
            query_pos: [B, Q, d] positional queries (the paper's learned object queries); with
                ``query_pos="input"`` they are added once to ``tgt`` instead.
            tgt: [B, Q, d] initial content; default zeros.
            self_attn_mask: [Q, Q] bool, True = query i may NOT attend to query j.
            layer_hook: replaces the positional queries before each layer (see
                :class:`DecoderLayerHook`).

        Returns:
            [L, B, Q, d] every decoder layer's output after the shared final LayerNorm.
        """
        if tgt is None:
            tgt = torch.zeros_like(query_pos)
        if self.query_pos == "input" and query_pos is not None:
            tgt, query_pos = tgt + query_pos, None
        decoder_memory, cross_pos = self.decoder_inputs(memory, pos_seq)
        return self.decoder(
            tgt, decoder_memory, key_mask, cross_pos, query_pos, self_attn_mask, layer_hook
        )

    @property
    def reads_pos(self) -> bool:
        """Whether the spatial encoding is read: at the encoder's input or attention layers
        (when it has layers), or at the decoder's keys or memory."""
        encoder = self.encoder_pos == "input" or (
            self.encoder_pos == "attn" and self.encoder.layers
        )
        return bool(encoder) or self.decoder_pos != "none"

    def encode(
        self, src: Tensor, mask: Tensor, pos: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Run the encoder on a feature map.

        Args:
            src: [B, d, h, w] projected features; mask: [B, h, w] bool True = real;
            pos: [B, d, h, w] spatial encoding or None.

        Returns:
            memory [B, S=h*w, d], key_mask [B, S] (True = real), and the spatial encoding as a
            sequence [B, S, d] (None when ``pos`` is None).
        """
        x = src.flatten(2).transpose(1, 2)
        key_mask = mask.flatten(1)
        if pos is None and self.reads_pos:
            raise ValueError("Transformer: pos is None but encoder_pos/decoder_pos use it")
        pos_seq = None if pos is None else pos.flatten(2).transpose(1, 2)
        if self.encoder_pos == "input":
            x = x + pos_seq
        memory = self.encoder(x, key_mask, pos_seq if self.encoder_pos == "attn" else None)
        return memory, key_mask, pos_seq

    def decoder_inputs(
        self, memory: Tensor, pos_seq: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """The memory the decoder reads and the position added to its cross-attention keys,
        per ``decoder_pos``: memory [B, S, d], pos_seq [B, S, d] -> (memory', key_pos)."""
        if self.decoder_pos == "input":
            return memory + pos_seq, None
        return memory, pos_seq if self.decoder_pos == "attn" else None
