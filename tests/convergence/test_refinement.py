"""Box refinement: each layer refines with its own head, and gradients stay within a layer."""

from __future__ import annotations

import torch

from detr_lightning.convergence.refinement import RefiningDecoderHook
from detr_lightning.detr.set_detector import MLP


def test_refined_box_gradient_stays_local_to_its_layer():
    """Module docstring: the next layer starts from the box 'detached, so gradients stay local
    to a layer'. A loss on the last layer's box gives layer 0's head no gradient."""
    torch.manual_seed(0)
    heads = [MLP(8, 8, 4, 3), MLP(8, 8, 4, 3)]
    ref_head = MLP(8, 8, 8, 2)
    hook = RefiningDecoderHook(heads, ref_head, torch.rand(1, 3, 4) * 0.5 + 0.25)
    hook(0, None)
    hidden0 = torch.randn(1, 3, 8)
    hook(1, hidden0)
    boxes = hook.finish(torch.randn(2, 1, 3, 8))
    boxes[-1].sum().backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in heads[0].parameters())
    assert any(p.grad is not None and p.grad.abs().max() > 0 for p in heads[1].parameters())


def test_each_layer_output_is_refined_by_its_own_head():
    """Layer i's output goes through head i: box_i = sigmoid(head_i(h_i) + logit(ref_i)),
    with ref_0 the initial reference and ref_{i+1} = box_i (computed by hand here)."""
    torch.manual_seed(0)
    heads = [MLP(8, 8, 4, 3) for _ in range(3)]
    ref0 = torch.rand(1, 2, 4) * 0.5 + 0.25
    hook = RefiningDecoderHook(heads, MLP(8, 8, 8, 2), ref0)
    hs = torch.randn(3, 1, 2, 8)
    hook(0, None)
    hook(1, hs[0])
    hook(2, hs[1])
    boxes = hook.finish(hs)
    logit = lambda x: torch.log(x / (1 - x))  # noqa: E731
    ref = ref0
    for i in range(3):
        expected = (heads[i](hs[i]) + logit(ref)).sigmoid()
        torch.testing.assert_close(boxes[i], expected, atol=1e-4, rtol=1e-4)
        ref = expected
