"""Sine encoding of boxes."""

import torch

from detr_lightning.convergence.box_encoding import box_sine_embedding


def test_box_sine_embedding_values():
    emb = box_sine_embedding(torch.tensor([[0.25, 0.5, 0.0, 1.0]]), dim=8)
    # per coordinate 2 features: sin(2*pi*x / 10000**0), cos(2*pi*x / 10000**0)
    expected = torch.tensor([[1.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 1.0]])
    torch.testing.assert_close(emb, expected, atol=1e-6, rtol=0)
