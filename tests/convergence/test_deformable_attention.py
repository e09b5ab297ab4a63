"""BoxDeformableAttention: where it samples (hand-computed points, a map whose values are their
own coordinates), what it returns (against a brute-force bilinear read), and its place in the
model (every decoder layer reads its own reference boxes; the lever's errors)."""

from functools import partial

import levers
import pytest
import torch

from detr_lightning.convergence.box_attention import BoxAttentionPrior
from detr_lightning.convergence.deformable_attention import BoxDeformableAttention, valid_ratios
from detr_lightning.convergence.dims import ModelDims
from detr_lightning.inference.attention import AttentionCapture


def _attention(d: int = 8, heads: int = 4, points: int = 2) -> BoxDeformableAttention:
    torch.manual_seed(0)
    return BoxDeformableAttention(ModelDims(d, 3, 2, 2, True, 2, nhead=heads), num_points=points)


def _identity_projections(attn: BoxDeformableAttention) -> None:
    with torch.no_grad():
        for layer in (attn.value_proj, attn.output_proj):
            layer.weight.copy_(torch.eye(layer.in_features))
            layer.bias.zero_()


def test_valid_ratios_are_the_real_share_of_width_and_height() -> None:
    mask = torch.zeros(2, 4, 8, dtype=torch.bool)
    mask[0] = True
    mask[1, :3, :6] = True
    torch.testing.assert_close(valid_ratios(mask), torch.tensor([[[1.0, 1.0]], [[0.75, 0.75]]]))


def test_a_fresh_layer_samples_a_star_reaching_the_box_border() -> None:
    """Zero query: head h looks along angle 2 pi h / H; its last point lies on the border."""
    attn = _attention(heads=4, points=2)
    box = torch.tensor([[[0.5, 0.4, 0.2, 0.6]]])  # cx, cy, w, h
    locations, weights = attn.sample_locations(torch.zeros(1, 1, 8), box)
    expected = torch.tensor(
        [
            [[0.55, 0.4], [0.6, 0.4]],  # right: half-way, then the right edge (cx + w/2)
            [[0.5, 0.55], [0.5, 0.7]],  # down
            [[0.45, 0.4], [0.4, 0.4]],  # left
            [[0.5, 0.25], [0.5, 0.1]],  # up
        ]
    )
    torch.testing.assert_close(locations[0, 0], expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(weights, torch.full((1, 1, 4, 2), 0.5))


def _coordinate_memory(mask: torch.Tensor, d: int) -> torch.Tensor:
    """[B, h*w, d] memory whose channel 0 is the token's column and channel 1 its row (in map
    pixels), so a bilinear read returns the read position itself."""
    b, h, w = mask.shape
    cols = torch.arange(w, dtype=torch.float).expand(b, h, w)
    rows = torch.arange(h, dtype=torch.float)[:, None].expand(b, h, w)
    memory = torch.zeros(b, h, w, d)
    memory[..., 0], memory[..., 1] = cols, rows
    return memory.flatten(1, 2)


def test_it_reads_the_memory_at_the_box_relative_points_of_each_images_real_extent() -> None:
    """One head, one point at the box centre: on a map whose values are their coordinates the
    output is the centre in map pixels, ``cx * real_width - 0.5`` (grid_sample's pixel
    centres), also for the padded image."""
    attn = _attention(d=2, heads=1, points=1)
    _identity_projections(attn)
    with torch.no_grad():
        attn.sampling_offsets.bias.zero_()
    mask = torch.zeros(2, 6, 8, dtype=torch.bool)
    mask[0] = True
    mask[1, :4, :5] = True  # real 4 x 5 of the padded 6 x 8
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.6, 0.1, 0.1]]]).expand(2, 2, 4)
    memory = _coordinate_memory(mask, 2)
    with attn.bound(lambda: boxes, mask):
        out, _ = attn(torch.zeros(2, 2, 2), memory, memory, key_padding_mask=~mask.flatten(1))
    real = torch.tensor([[8.0, 6.0], [5.0, 4.0]])  # (width, height) per image
    torch.testing.assert_close(out, boxes[..., :2] * real[:, None] - 0.5)


def test_the_output_is_the_softmax_weighted_bilinear_read_and_its_weights_map_says_so() -> None:
    """Random offsets, one head of 3 points, padded image: the output equals the dense weights
    map returned with ``need_weights`` (a scatter of bilinear weights, computed apart from
    grid_sample) applied to the projected values."""
    torch.manual_seed(1)
    attn = _attention(d=8, heads=1, points=3)
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 0.5)
        attn.attention_weights.weight.normal_(0, 1.0)
    mask = torch.zeros(2, 5, 7, dtype=torch.bool)
    mask[0] = True
    mask[1, :4, :6] = True
    memory, query = torch.randn(2, 35, 8), torch.randn(2, 3, 8)
    boxes = torch.tensor([[0.5, 0.5, 0.4, 0.6], [0.2, 0.3, 0.2, 0.2], [0.8, 0.7, 0.3, 0.3]])
    boxes = boxes.expand(2, 3, 4)
    padding = ~mask.flatten(1)
    with attn.bound(lambda: boxes, mask):
        out, dense = attn(query, memory, memory, key_padding_mask=padding, need_weights=True)
    values = attn.value_proj(memory.masked_fill(padding[..., None], 0.0))
    expected = attn.output_proj(dense @ values)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    inside = dense.sum(-1)  # points inside the map keep all their weight
    assert dense.shape == (2, 3, 35) and (dense >= 0).all() and (inside <= 1 + 1e-6).all()


def test_the_offsets_learn_from_the_loss() -> None:
    """grid_sample passes a gradient to the sampling positions."""
    attn = _attention()
    mask = torch.ones(1, 4, 4, dtype=torch.bool)
    boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.5]]])
    with attn.bound(lambda: boxes, mask):
        out, _ = attn(torch.randn(1, 1, 8), None, torch.randn(1, 16, 8))
    out.square().sum().backward()
    assert attn.sampling_offsets.bias.grad.abs().sum() > 0


def test_outside_its_binding_or_with_a_bias_it_explains_itself() -> None:
    attn = _attention()
    with pytest.raises(RuntimeError, match="inside ``with module.bound"):
        attn(torch.randn(1, 1, 8), None, torch.randn(1, 16, 8))
    with attn.bound(lambda: torch.rand(1, 1, 4), torch.ones(1, 4, 4, dtype=torch.bool)):
        with pytest.raises(ValueError, match="attention_prior and model.net.cross_attention"):
            attn(torch.randn(1, 1, 8), None, torch.randn(1, 16, 8), attn_mask=torch.zeros(4, 1, 16))
    with attn.bound(lambda: torch.rand(1, 1, 4), torch.ones(1, 4, 4, dtype=torch.bool)):
        with pytest.raises(ValueError, match="the memory has 20 tokens, the bound mask's map 4x4"):
            attn(torch.randn(1, 1, 8), None, torch.randn(1, 20, 8))
    with pytest.raises(ValueError, match="num_points"):
        _attention(points=0)


def _deformable_model():
    return levers.compact_model(cross_attention=partial(BoxDeformableAttention, num_points=2))


def test_every_decoder_layer_reads_around_its_own_reference_boxes() -> None:
    """Layer 0 samples around the proposals, layer 1 around layer 0's refined boxes; the
    model trains (finite losses need every part) and outputs DETR's keys."""
    model = _deformable_model().eval()
    seen: list[torch.Tensor] = []
    for layer in model.transformer.decoder.layers:
        assert isinstance(layer.multihead_attn, BoxDeformableAttention)
        layer.multihead_attn.register_forward_pre_hook(
            lambda m, _a, _kw: seen.append(m._reference().clone()), with_kwargs=True
        )
    pixels, mask, _ = levers.batch()
    with torch.no_grad():
        out = model(pixels, mask)
    torch.testing.assert_close(seen[1], out["aux_outputs"][0]["pred_boxes"])
    assert not torch.equal(seen[0], seen[1])
    assert model.transformer.decoder.layers[0].multihead_attn._reference is None  # unbound


def test_attention_maps_of_the_deformable_decoder_sum_to_one_over_the_map() -> None:
    model = _deformable_model().eval()
    pixels, mask, _ = levers.batch()
    with torch.no_grad(), AttentionCapture(model, encoder=False) as capture:
        model(pixels, mask)
    maps = capture.maps().decoder
    sums = maps.flatten(2).sum(-1)
    assert ((sums > 0.5) & (sums <= 1 + 1e-5)).all()  # points off the map lose their share


def test_the_lever_needs_refinement_and_excludes_the_attention_prior() -> None:
    deformable = partial(BoxDeformableAttention)
    with pytest.raises(ValueError, match="cross_attention .* needs model.net.box_refinement"):
        levers.model(queries=levers.learned(), cross_attention=deformable)
    with pytest.raises(ValueError, match="remove one of them"):
        levers.compact_model(cross_attention=deformable, attention_prior=BoxAttentionPrior)
