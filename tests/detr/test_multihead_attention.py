"""The attention's own CPU training path against torch's nn.MultiheadAttention (the reference)
and against attention computed by hand with the same dropout mask."""

import pytest
import torch
from torch import nn

from detr_lightning.detr.dropout import keep_mask
from detr_lightning.detr.multihead_attention import MultiheadAttention

B, L, S, D, H = 2, 5, 7, 16, 4


def _pair(dropout: float = 0.0) -> tuple[MultiheadAttention, nn.MultiheadAttention]:
    torch.manual_seed(0)
    ours = MultiheadAttention(D, H, dropout=dropout)
    nn.init.normal_(ours.in_proj_bias)
    nn.init.normal_(ours.out_proj.bias)
    ref = nn.MultiheadAttention(D, H, dropout=dropout, batch_first=True)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def _padding() -> torch.Tensor:
    pad = torch.zeros(B, S, dtype=torch.bool)
    pad[1, -3:] = True
    return pad


@pytest.mark.parametrize("kind", ["self", "cross", "cross+bool mask", "self+float mask"])
def test_own_path_without_dropout_equals_torch_attention(kind: str) -> None:
    ours, ref = _pair()
    x = torch.randn(B, L, D, requires_grad=True)
    if kind.startswith("self"):
        q = k = x
        v, pad = torch.randn(B, L, D), None
        mask = torch.randn(L, L) if "float" in kind else None
    else:
        q, k, v, pad = x, torch.randn(B, S, D), torch.randn(B, S, D), _padding()
        mask = torch.rand(L, S) < 0.3 if "bool" in kind else None
        if mask is not None:
            mask[:, 0] = False  # every query keeps one key
    out = ours.attend(q, k, v, pad, mask, dropout_p=0.0)
    expected = ref(q, k, v, key_padding_mask=pad, attn_mask=mask, need_weights=False)[0]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-5)


def test_training_with_dropout_drops_attention_weights_with_the_cheap_mask() -> None:
    """softmax(q kᵀ/√d) · mask / (1 - p) · v, projected: written out here with torch ops."""
    p = 0.3
    ours, _ = _pair(dropout=p)
    q, kv, pad = torch.randn(B, L, D), torch.randn(B, S, D), _padding()
    torch.manual_seed(7)
    out, weights = ours.train()(q, kv, kv, key_padding_mask=pad, need_weights=False)
    assert weights is None
    torch.manual_seed(7)
    keep = keep_mask((B, H, L, S), p, torch.device("cpu"))
    w, b = ours.in_proj_weight, ours.in_proj_bias
    heads = [
        (t @ w[i * D : (i + 1) * D].T + b[i * D : (i + 1) * D])
        .view(B, -1, H, D // H)
        .transpose(1, 2)
        for i, t in enumerate((q, kv, kv))
    ]
    logits = heads[0] @ heads[1].transpose(-1, -2) / (D // H) ** 0.5
    attn = logits.masked_fill(pad[:, None, None], float("-inf")).softmax(-1) * keep / (1 - p)
    expected = ours.out_proj((attn @ heads[2]).transpose(1, 2).reshape(B, L, D))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_evaluation_and_need_weights_are_torch_attention() -> None:
    ours, ref = _pair(dropout=0.5)
    q, kv = torch.randn(B, L, D), torch.randn(B, S, D)
    for module in (ours, ref):
        module.eval()
    out, weights = ours(q, kv, kv, key_padding_mask=_padding())
    expected, expected_weights = ref(q, kv, kv, key_padding_mask=_padding())
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(weights, expected_weights)
    ours.train()
    torch.manual_seed(8)
    _, weights = ours(q, kv, kv, need_weights=True)  # torch's path returns the weights
    assert weights.shape == (B, L, S)


def test_parameters_and_state_dict_keys_are_torch_attention() -> None:
    ours, ref = _pair()
    assert isinstance(ours, nn.MultiheadAttention) and ours.batch_first
    assert list(ours.state_dict()) == list(ref.state_dict())


def test_per_head_masks_in_training_take_torch_path_and_block_keys() -> None:
    """A [B*heads, L, S] mask is left to torch: keys it blocks never reach the output."""
    ours, _ = _pair(dropout=0.3)
    q, k, v = torch.randn(B, L, D), torch.randn(B, S, D), torch.randn(B, S, D)
    mask = torch.ones(B * H, L, S, dtype=torch.bool)
    mask[:, :, 0] = False  # only key 0 is visible
    changed = v.clone()
    changed[:, 1:] += 100.0
    torch.manual_seed(9)
    out = ours.train()(q, k, v, attn_mask=mask, need_weights=False)[0]
    torch.manual_seed(9)
    torch.testing.assert_close(ours(q, k, changed, attn_mask=mask, need_weights=False)[0], out)
