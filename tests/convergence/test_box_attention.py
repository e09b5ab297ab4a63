"""BoxAttentionPrior: the cross-attention bias against hand-computed values, and its effect on
the decoder (a query reads its own box)."""

import math

import levers
import pytest
import torch

from detr_lightning.convergence.box_attention import BoxAttentionPrior, token_centres
from detr_lightning.convergence.dims import ModelDims
from detr_lightning.convergence.focal_scoring import FocalScoring


def _prior(**kwargs) -> BoxAttentionPrior:
    return BoxAttentionPrior(ModelDims(16, 3, 2, 2, FocalScoring(), 2, nhead=4), **kwargs)


def test_token_centres_follow_each_images_real_extent() -> None:
    mask = torch.zeros(2, 2, 4, dtype=torch.bool)
    mask[0] = True  # image 0 fills the 2 x 4 canvas
    mask[1, :1, :2] = True  # image 1 covers 1 x 2 of it (padding bottom / right)
    x, y = token_centres(mask)
    assert x[0].tolist() == pytest.approx([0.125, 0.375, 0.625, 0.875] * 2)
    assert y[0].tolist() == pytest.approx([0.25] * 4 + [0.75] * 4)
    assert x[1, :2].tolist() == pytest.approx([0.25, 0.75])  # real tokens of image 1
    assert y[1, :2].tolist() == pytest.approx([0.5, 0.5])


def test_bias_by_hand_and_heads_log_spaced() -> None:
    prior = _prior(min_scale=0.5, max_scale=4.0)
    assert prior.log_scale.exp().tolist() == pytest.approx([0.5, 1.0, 2.0, 4.0], rel=1e-6)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4]]])  # one query, cxcywh
    x = torch.tensor([[0.5, 0.7, 0.5, 0.0]])  # tokens: centre, one width right, ...
    y = torch.tensor([[0.5, 0.5, 0.9, 0.5]])  # ... one height down, 2.5 widths left
    bias = prior(boxes, x, y)
    assert bias.shape == (4, 1, 4)  # [B * heads, N, S]
    distance = [0.0, 1.0, 1.0, 6.25]
    for head, scale in enumerate([0.5, 1.0, 2.0, 4.0]):
        expected = [-scale * d for d in distance]
        assert bias[head, 0].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_collapsed_box_gives_a_finite_bias_and_scales_learn() -> None:
    prior = _prior(min_size=0.05)
    boxes = torch.tensor([[[0.5, 0.5, 0.0, 0.0]]])
    bias = prior(boxes, torch.tensor([[0.55]]), torch.tensor([[0.5]]))
    assert torch.isfinite(bias).all()
    assert bias[0, 0, 0].item() == pytest.approx(-0.5 * 1.0, rel=1e-5)  # 0.05 / 0.05 = 1 width
    bias.sum().backward()
    assert prior.log_scale.grad is not None and (prior.log_scale.grad != 0).all()


def test_bad_scales_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="min_scale <= max_scale"):
        _prior(min_scale=2.0, max_scale=1.0)


def _with_prior(log_scale: float | None = None):
    model = levers.compact_model(attention_prior=BoxAttentionPrior)
    if log_scale is not None:
        model.attention_prior.log_scale.data.fill_(log_scale)
    return model.eval()


def test_every_decoder_layer_gets_the_bias_of_its_own_reference_boxes() -> None:
    """Layer i's cross-attention receives prior(reference of layer i): the proposals for the
    first layer, layer i-1's refined boxes after that."""
    model = _with_prior()
    seen: list[torch.Tensor] = []
    for layer in model.transformer.decoder.layers:
        layer.multihead_attn.register_forward_pre_hook(
            lambda _m, _a, kw: seen.append(kw["attn_mask"]), with_kwargs=True
        )
    pixels, mask, _ = levers.batch()
    with torch.no_grad():
        out, enc, _ = model.forward_with_hidden(pixels, mask)
    x, y = token_centres(enc.features[-1][1])
    assert x.shape[1] == enc.memory.shape[1]
    # layer 0's output boxes are layer 1's reference
    second = model.attention_prior(out["aux_outputs"][0]["pred_boxes"], x, y)
    torch.testing.assert_close(seen[1], second)
    assert seen[0].shape == (2 * 4, 5, enc.memory.shape[1])  # [B * heads, N, S]
    assert (seen[0] <= 0).all() and not torch.equal(seen[0], seen[1])


def test_a_vanishing_prior_is_the_model_without_it() -> None:
    """Scales of ~0 make the bias ~0: the same outputs as the model without the lever."""
    with_prior = _with_prior(log_scale=-40.0)
    without = levers.compact_model()
    without.load_state_dict(with_prior.state_dict(), strict=False)
    without.eval()
    pixels, mask, _ = levers.batch()
    with torch.no_grad():
        a, b = with_prior(pixels, mask), without(pixels, mask)
    torch.testing.assert_close(a["pred_boxes"], b["pred_boxes"])
    torch.testing.assert_close(a["pred_logits"], b["pred_logits"])
    strong = _with_prior(log_scale=math.log(50.0))
    with torch.no_grad():
        c = strong(pixels, mask)
    assert not torch.allclose(c["pred_logits"], b["pred_logits"], atol=1e-4)


def test_prior_without_box_refinement_is_explained() -> None:
    with pytest.raises(ValueError, match="attention_prior .* needs model.net.box_refinement"):
        levers.model(queries=levers.learned(), attention_prior=BoxAttentionPrior)


def test_equal_min_and_max_scales_give_every_head_that_scale() -> None:
    prior = _prior(min_scale=2.0, max_scale=2.0)  # 0 < min_scale <= max_scale
    assert prior.log_scale.exp().tolist() == pytest.approx([2.0] * 4)
