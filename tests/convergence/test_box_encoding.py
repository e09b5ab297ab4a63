"""Sine encoding of boxes."""

import torch

from detr_lightning.convergence.box_encoding import box_sine_embedding


def test_box_sine_embedding_values():
    emb = box_sine_embedding(torch.tensor([[0.25, 0.5, 0.0, 1.0]]), dim=8)
    # per coordinate 2 features: sin(2*pi*x / 10000**0), cos(2*pi*x / 10000**0)
    expected = torch.tensor([[1.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0, 1.0]])
    torch.testing.assert_close(emb, expected, atol=1e-6, rtol=0)


def test_box_sine_embedding_frequencies_follow_the_temperature():
    """dim 16: 4 features per coordinate, sin and cos of 2 pi c / T^(2 floor(i / 2) / 4) for
    i = 0..3, i.e. periods 1, 1, 100, 100 at T = 10000 (DINO's gen_sineembed_for_position)."""
    import math

    box = [0.3, 0.6, 0.2, 0.9]
    emb = box_sine_embedding(torch.tensor([box]), dim=16)
    expected = []
    for c in box:
        for period in (1.0, 100.0):
            angle = 2 * math.pi * c / period
            expected += [math.sin(angle), math.cos(angle)]
    torch.testing.assert_close(emb, torch.tensor([expected]), atol=1e-6, rtol=0)


def test_inverse_sigmoid_inverts_the_sigmoid_and_stays_finite_at_the_borders():
    import math

    from detr_lightning.convergence.box_encoding import inverse_sigmoid

    x = torch.tensor([0.1, 0.5, 0.9])
    torch.testing.assert_close(torch.sigmoid(inverse_sigmoid(x)), x)
    border = inverse_sigmoid(torch.tensor([0.0, 1.0]), eps=1e-3)
    edge = math.log(0.999 / 0.001)
    torch.testing.assert_close(border, torch.tensor([-edge, edge]))
