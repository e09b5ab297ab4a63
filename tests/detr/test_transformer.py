"""Transformer layers against an independent nn.MultiheadAttention reference (the official layers).

The reference below restates the official DETR layer equations in the official layout
(sequence-first tensors, ``nn.MultiheadAttention``, key_padding_mask True on padding), with the
same attribute names, so that ``load_state_dict`` also proves the checkpoint keys map 1:1.
"""

import math

import pytest
import torch
from official_reference import FF, D, H, RefTransformer, layer_inputs, randomise

from detr_lightning.detr.transformer import Transformer


@pytest.mark.parametrize("pre", [False, True])
def test_transformer_matches_reference_stack(pre: bool) -> None:
    ours = Transformer(D, H, 2, 2, FF, dropout=0.1, normalize_before=pre).eval()
    randomise(ours)
    ref = RefTransformer(pre).eval()
    ref.load_state_dict(ours.state_dict())  # strict: same keys, incl. encoder.norm iff pre-norm
    src, mask, query, pos = layer_inputs()
    hs, memory = ours(src, mask, query, pos)
    hs_ref, memory_ref = ref(src, mask, query, pos)
    assert hs.shape == (2, 2, 6, D) and memory.shape == src.shape
    torch.testing.assert_close(hs, hs_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(memory, memory_ref, atol=1e-5, rtol=1e-5)


def test_init_like_official() -> None:
    model = Transformer(D, H, 1, 1, FF)
    for name, p in model.named_parameters():
        if p.dim() > 1:  # xavier_uniform bound sqrt(6 / (fan_in + fan_out))
            assert p.abs().max() <= math.sqrt(6 / sum(p.shape[:2])), name
        if name.endswith(("in_proj_bias", "out_proj.bias")):
            assert torch.count_nonzero(p) == 0, name


def test_padding_garbage_never_reaches_real_outputs() -> None:
    model = Transformer(D, H, 2, 2, FF, dropout=0.0).eval()
    src, mask, query, pos = layer_inputs(b=1, h=4, w=6)
    mask[:] = False
    mask[0, :3, :4] = True
    garbage_src, garbage_pos = src.clone(), pos.clone()
    garbage_src[..., 3:, :] = 1e3 * torch.randn_like(garbage_src[..., 3:, :])
    garbage_src[..., :, 4:] = -7.0
    garbage_pos[..., :, 4:] = 1e2
    hs, memory = model(src, mask, query, pos)
    hs_g, memory_g = model(garbage_src, mask, query, garbage_pos)
    torch.testing.assert_close(hs_g, hs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(memory_g[..., :3, :4], memory[..., :3, :4], atol=1e-5, rtol=1e-5)
    # The same image unpadded gives the same decoder output.
    hs_alone, _ = model(src[..., :3, :4], mask[:, :3, :4], query, pos[..., :3, :4])
    torch.testing.assert_close(hs_alone, hs, atol=1e-5, rtol=1e-5)


def test_zero_encoder_layers_memory_is_the_input() -> None:
    model = Transformer(D, H, 0, 2, FF).eval()
    src, mask, query, pos = layer_inputs()
    hs, memory = model(src, mask, query, pos)
    assert torch.equal(memory, src) and hs.shape == (2, 2, 6, D)


def test_without_ffn_layers_have_no_feed_forward() -> None:
    model = Transformer(D, H, 1, 1, FF, use_ffn=False).eval()
    keys = model.state_dict().keys()
    assert not any("linear" in k or "norm3" in k for k in keys)
    assert "encoder.layers.0.norm2.weight" not in keys and "decoder.layers.0.norm2.weight" in keys
    src, mask, query, pos = layer_inputs()
    assert model(src, mask, query, pos)[0].shape == (1, 2, 6, D)


def _twins(first_kwargs: dict, second_kwargs: dict, enc: int = 1):
    first = Transformer(D, H, enc, 2, FF, dropout=0.0, **first_kwargs).eval()
    second = Transformer(D, H, enc, 2, FF, dropout=0.0, **second_kwargs).eval()
    second.load_state_dict(first.state_dict())
    return first, second


def test_encoder_pos_input_equals_adding_pos_to_the_features() -> None:
    at_input, nowhere = _twins({"encoder_pos": "input"}, {"encoder_pos": "none"})
    src, mask, query, pos = layer_inputs()
    expected = nowhere(src + pos, mask, query, pos)[0]
    torch.testing.assert_close(at_input(src, mask, query, pos)[0], expected)


def test_decoder_pos_input_equals_adding_pos_to_the_memory() -> None:
    # With no encoder layer the memory is the input, so "pos added to the memory" is src + pos.
    at_input, nowhere = _twins(
        {"decoder_pos": "input"}, {"encoder_pos": "none", "decoder_pos": "none"}, enc=0
    )
    src, mask, query, pos = layer_inputs()
    expected = nowhere(src + pos, mask, query, None)[0]
    torch.testing.assert_close(at_input(src, mask, query, pos)[0], expected)


def test_query_pos_input_equals_queries_as_initial_content() -> None:
    at_input, at_attn = _twins({"query_pos": "input"}, {"query_pos": "attn"})
    src, mask, query, pos = layer_inputs()
    expected = at_attn(src, mask, torch.zeros_like(query), pos, tgt=query.expand(2, -1, -1))[0]
    torch.testing.assert_close(at_input(src, mask, query, pos)[0], expected)


def test_per_image_query_embed_equals_shared() -> None:
    model = Transformer(D, H, 1, 2, FF).eval()
    src, mask, query, pos = layer_inputs()
    shared = model(src, mask, query, pos)[0]
    torch.testing.assert_close(model(src, mask, query.expand(2, -1, -1), pos)[0], shared)


def test_self_attn_mask_isolates_query_groups() -> None:
    # Two groups of 3 queries that may not see each other behave like two separate runs.
    model = Transformer(D, H, 1, 2, FF, dropout=0.0).eval()
    src, mask, query, pos = layer_inputs()
    group = torch.arange(6) // 3
    blocked = group[:, None] != group[None, :]
    hs = model(src, mask, query, pos, self_attn_mask=blocked)[0]
    for g in range(2):
        alone = model(src, mask, query[3 * g : 3 * g + 3], pos)[0]
        torch.testing.assert_close(hs[:, :, 3 * g : 3 * g + 3], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(hs, model(src, mask, query, pos)[0], atol=1e-3)


def test_dropout_only_in_training() -> None:
    model = Transformer(D, H, 1, 1, FF, dropout=0.5)
    src, mask, query, pos = layer_inputs()
    assert not torch.allclose(model(src, mask, query, pos)[0], model(src, mask, query, pos)[0])
    model.eval()
    torch.testing.assert_close(model(src, mask, query, pos)[0], model(src, mask, query, pos)[0])


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ValueError, match="query_pos"):
        Transformer(D, H, query_pos="none")
    with pytest.raises(ValueError, match="encoder_pos"):
        Transformer(D, H, encoder_pos="everywhere")
    with pytest.raises(ValueError, match="num_decoder_layers"):
        Transformer(D, H, num_decoder_layers=0)
    with pytest.raises(ValueError, match="divisible"):
        Transformer(30, 8)
    src, mask, query, _ = layer_inputs()
    with pytest.raises(ValueError, match="pos"):
        Transformer(D, H, 1, 1, FF)(src, mask, query, None)


class _BiasHook:
    """A decoder layer hook that keeps the positional queries and adds ``bias`` to every
    layer's cross-attention logits."""

    def __init__(self, bias: torch.Tensor | None) -> None:
        self.bias, self.calls = bias, []

    def __call__(self, index: int, hidden: torch.Tensor | None) -> None:
        self.calls.append(index)

    def memory_bias(self) -> torch.Tensor | None:
        return self.bias


def test_layer_hook_memory_bias_reaches_every_cross_attention() -> None:
    """A zero bias changes nothing; a bias that leaves each query one real token makes the
    decoder blind to every other token of the memory."""
    model = Transformer(D, H, 0, 2, FF, dropout=0.0).eval()
    src, mask, query, pos = layer_inputs(b=2, h=3, w=5, q=4)
    memory, key_mask, pos_seq = model.encode(src, mask, pos)
    query_pos = query.expand(2, -1, -1)
    plain = model.decode(memory, key_mask, pos_seq, query_pos)
    zero = torch.zeros(2 * H, 4, memory.shape[1])
    hook = _BiasHook(zero)
    torch.testing.assert_close(
        model.decode(memory, key_mask, pos_seq, query_pos, None, None, hook), plain
    )
    assert hook.calls == [0, 1]
    only_first = torch.full_like(zero, float("-inf"))
    only_first[..., 0] = 0.0  # token 0 is real in both images
    hook = _BiasHook(only_first)
    seen = model.decode(memory, key_mask, pos_seq, query_pos, None, None, hook)
    other = memory.clone()
    other[:, 1:] = torch.randn_like(other[:, 1:])
    changed = model.decode(other, key_mask, pos_seq, query_pos, None, None, hook)
    torch.testing.assert_close(changed, seen)
    assert not torch.allclose(model.decode(other, key_mask, pos_seq, query_pos), plain)


def test_encoder_pos_none_makes_the_memory_independent_of_the_spatial_encoding():
    """encoder_pos='none': the encoder reads no spatial encoding, so its memory is the same for
    any ``pos`` (invariant)."""
    from detr_lightning.detr.transformer import Transformer

    torch.manual_seed(0)
    tr = Transformer(
        d_model=8,
        nhead=2,
        num_encoder_layers=2,
        num_decoder_layers=1,
        dim_feedforward=16,
        dropout=0.0,
        encoder_pos="none",
    ).eval()
    src = torch.randn(1, 8, 3, 4)
    mask = torch.ones(1, 3, 4, dtype=torch.bool)
    m1, _, _ = tr.encode(src, mask, torch.randn(1, 8, 3, 4))
    m2, _, _ = tr.encode(src, mask, torch.randn(1, 8, 3, 4))
    torch.testing.assert_close(m1, m2)
