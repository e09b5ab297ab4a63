"""The cheap-mask dropout against the statistics of Bernoulli sampling and nn.Dropout's contract."""

import math

import pytest
import torch
from torch import nn

from detr_lightning.detr.dropout import Dropout, dropout, keep_mask

N = 1 << 22  # 4 M draws: a drop-rate standard error of 1.5e-4 at p = 0.1


def _effective(p: float) -> float:
    return round(p * 65536) / 65536


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5, 0.9])
def test_drop_rate_is_p_rounded_to_two_to_the_minus_16(p: float) -> None:
    torch.manual_seed(0)
    dropped = (~keep_mask((N,), p, torch.device("cpu"))).double().mean().item()
    sigma = math.sqrt(p * (1 - p) / N)
    assert abs(dropped - _effective(p)) < 5 * sigma
    assert abs(_effective(p) - p) <= 2**-17


def test_drops_are_independent_within_and_across_random_words() -> None:
    """Four neighbouring elements share one 64-bit draw: pairs of neighbours (same word) and
    elements four apart (next word) must both be dropped together with probability p²."""
    p = 0.3
    torch.manual_seed(1)
    dropped = ~keep_mask((N,), p, torch.device("cpu"))
    for lag in (1, 2, 3, 4):
        both = (dropped[:-lag] & dropped[lag:]).double().mean().item()
        sigma = math.sqrt(p * p * (1 - p * p) / N)
        assert abs(both - _effective(p) ** 2) < 5 * sigma, lag


@pytest.mark.parametrize("shape", [(3, 5, 7), (1,), (2, 4)])
def test_mask_has_the_requested_shape_for_any_size(shape: tuple[int, ...]) -> None:
    mask = keep_mask(shape, 0.5, torch.device("cpu"))
    assert mask.shape == shape and mask.dtype == torch.bool


def test_kept_values_are_scaled_and_the_gradient_uses_the_same_mask() -> None:
    p = 0.25
    x = (torch.rand(64, 33) + 0.5).requires_grad_()
    y = dropout(x, p)
    kept = y != 0
    assert 0 < kept.sum() < x.numel()
    torch.testing.assert_close(y[kept], x.detach()[kept] / (1 - p))
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))


def test_mean_is_preserved() -> None:
    torch.manual_seed(2)
    y = dropout(torch.ones(N), 0.1)
    # E[y] = (1 - p_eff) / (1 - p); its sample standard error is sqrt(p (1-p) / N) / (1 - p)
    assert abs(y.double().mean().item() - 1.0) < 5 * math.sqrt(0.1 * 0.9 / N) / 0.9


def test_seeded_masks_repeat_and_differ_between_seeds() -> None:
    x = torch.randn(1000)
    torch.manual_seed(3)
    a = dropout(x, 0.5)
    torch.manual_seed(3)
    b = dropout(x, 0.5)
    torch.manual_seed(4)
    c = dropout(x, 0.5)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, c)


def test_identity_outside_training_or_at_p_zero_and_zeros_at_p_one() -> None:
    x = torch.randn(10)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros(10))


def test_module_is_an_nn_dropout_drawing_the_cheap_mask() -> None:
    module = Dropout(0.4)
    assert isinstance(module, nn.Dropout) and repr(module) == repr(nn.Dropout(0.4))
    x = torch.randn(500)
    torch.manual_seed(5)
    expected = dropout(x, 0.4)
    torch.manual_seed(5)
    torch.testing.assert_close(module(x), expected)
    assert module.eval()(x) is x


def test_a_compiled_training_forward_is_one_graph_with_dropout() -> None:
    """Dynamo cannot trace the cheap mask's in-place draw: under torch.compile the transformer
    falls back to F.dropout, so DETR's training forward compiles to one graph, not one per
    dropout (33 graph breaks before)."""
    from detr_lightning.detr.model import build_detr

    torch.manual_seed(0)
    net = build_detr(backbone="resnet18", hidden_dim=32, nheads=4, enc_layers=2, dec_layers=2,
                     dim_feedforward=64, dropout=0.1, num_classes=3).train()  # fmt: skip
    explained = torch._dynamo.explain(net)(torch.randn(1, 3, 64, 64))
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
