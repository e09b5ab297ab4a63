"""The batch-first fast path of detr.attention.MultiheadAttention equals nn.MultiheadAttention."""

import pytest
import torch
from torch import nn

from detr_lightning.detr.attention import MultiheadAttention


@pytest.mark.parametrize("self_attention", [True, False])
def test_fast_path_matches_torch_forward_and_gradients(self_attention: bool) -> None:
    torch.manual_seed(0)
    ours = MultiheadAttention(32, 4, dropout=0.0, batch_first=True)
    ref = nn.MultiheadAttention(32, 4, dropout=0.0, batch_first=True)
    ref.load_state_dict(ours.state_dict())
    x, memory = torch.randn(2, 7, 32), torch.randn(2, 11, 32)
    pos = torch.randn(2, 11 if not self_attention else 7, 32)
    padding = torch.zeros(2, 11 if not self_attention else 7, dtype=torch.bool)
    padding[1, -3:] = True
    outs = []
    for module in (ours, ref):
        src = x if self_attention else memory
        key = src + pos
        query = key if self_attention else x
        out = module(query, key, src, key_padding_mask=padding, need_weights=False)[0]
        grads = torch.autograd.grad(out.square().sum(), list(module.parameters()))
        outs.append((out, grads))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-6, rtol=1e-5)
    for a, b in zip(outs[0][1], outs[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_weights_and_masks_fall_back_to_torch() -> None:
    torch.manual_seed(0)
    ours = MultiheadAttention(16, 2, batch_first=True).eval()
    x = torch.randn(1, 5, 16)
    out, weights = ours(x, x, x, need_weights=True)
    assert weights.shape == (1, 5, 5)
    blocked = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
    masked, _ = ours(x, x, x, attn_mask=blocked, need_weights=False)
    ref, _ = nn.MultiheadAttention.forward(ours, x, x, x, attn_mask=blocked, need_weights=False)
    torch.testing.assert_close(masked, ref)
