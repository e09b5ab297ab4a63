"""Transformer layers against an independent nn.MultiheadAttention reference (the official
layer equations, sequence-first, restated in tests/support/official_reference.py with the
official attribute names: ``load_state_dict`` also proves the checkpoint keys map 1:1)."""

import pytest
import torch
from official_reference import FF, D, H, RefDecoderLayer, RefEncoderLayer, layer_inputs, randomise

from detr_lightning.detr.transformer_layers import (
    TransformerDecoderLayer,
    TransformerEncoderLayer,
    add_pos,
)


def test_add_pos_without_position_is_the_identity() -> None:
    x, pos = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert add_pos(x, None) is x
    torch.testing.assert_close(add_pos(x, pos), x + pos)


@pytest.mark.parametrize("pre", [False, True])
def test_encoder_layer_matches_multihead_attention_reference(pre: bool) -> None:
    ours = TransformerEncoderLayer(D, H, FF, dropout=0.1, pre=pre).eval()
    randomise(ours)
    ref = RefEncoderLayer(pre).eval()
    ref.load_state_dict(ours.state_dict())
    src, mask, _, pos = layer_inputs()
    src_s, pos_s, real = (
        src.flatten(2).transpose(1, 2),
        pos.flatten(2).transpose(1, 2),
        mask.flatten(1),
    )
    out = ours(src_s, real, pos_s)
    expected = ref(src_s.transpose(0, 1), ~real, pos_s.transpose(0, 1)).transpose(0, 1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pre", [False, True])
def test_decoder_layer_matches_multihead_attention_reference(pre: bool) -> None:
    ours = TransformerDecoderLayer(D, H, FF, dropout=0.1, pre=pre).eval()
    randomise(ours)
    ref = RefDecoderLayer(pre).eval()
    ref.load_state_dict(ours.state_dict())
    src, mask, query, pos = layer_inputs()
    mem, pos_s, real = (
        src.flatten(2).transpose(1, 2),
        pos.flatten(2).transpose(1, 2),
        mask.flatten(1),
    )
    tgt, qpos = torch.randn(2, 6, D), query.expand(2, -1, -1)
    out = ours(tgt, mem, real, pos_s, qpos)
    t = lambda x: x.transpose(0, 1)  # noqa: E731
    expected = t(ref(t(tgt), t(mem), ~real, t(pos_s), t(qpos)))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
