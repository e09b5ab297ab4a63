"""BoxDeformableAttention: where it samples (hand-computed points, a map whose values are their
own coordinates), what it returns (against a brute-force bilinear read), and its place in the
model (every decoder layer reads its own reference boxes; the lever's errors)."""

from functools import partial

import levers
import pytest
import torch

from detr_lightning.convergence.box_attention import BoxAttentionPrior
from detr_lightning.convergence.compact_trunk import CompactBackbone
from detr_lightning.convergence.deformable_attention import BoxDeformableAttention
from detr_lightning.convergence.dims import ModelDims
from detr_lightning.convergence.focal_scoring import FocalScoring
from detr_lightning.inference.attention import AttentionCapture


def _attention(d: int = 8, heads: int = 4, points: int = 2) -> BoxDeformableAttention:
    torch.manual_seed(0)
    return BoxDeformableAttention(
        ModelDims(d, 3, 2, 2, FocalScoring(), 2, nhead=heads), num_points=points
    )


def _identity_projections(attn: BoxDeformableAttention) -> None:
    with torch.no_grad():
        for layer in (attn.value_proj, attn.output_proj):
            layer.weight.copy_(torch.eye(layer.in_features))
            layer.bias.zero_()


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


def _two_level_attention() -> BoxDeformableAttention:
    dims = ModelDims(2, 3, 2, 2, FocalScoring(), 2, nhead=1, backbone_stages={"c4": 2, "p8": 2})
    attn = BoxDeformableAttention(dims, num_points=1, levels=["c4"])
    _identity_projections(attn)
    with torch.no_grad():
        attn.level_proj[0].weight.copy_(torch.eye(2))
        attn.level_proj[0].bias.zero_()
        attn.sampling_offsets.bias.zero_()
    return attn


def test_with_levels_a_query_reads_each_level_at_its_own_real_extent() -> None:
    """One head, one point per level at the box centre, zero query (equal softmax weights): on
    maps whose values are their coordinates the output is the mean of the centre in the
    memory's pixels and in the stride-4 level's, each at its own real extent."""
    attn = _two_level_attention()
    mask8 = torch.zeros(2, 6, 8, dtype=torch.bool)
    mask8[0], mask8[1, :4, :5] = True, True
    mask4 = torch.zeros(2, 12, 16, dtype=torch.bool)
    mask4[0], mask4[1, :7, :9] = True, True  # its own rounding: not twice the memory's extent
    memory = _coordinate_memory(mask8, 2)
    level = _coordinate_memory(mask4, 2).view(2, 12, 16, 2).permute(0, 3, 1, 2)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.3, 0.6, 0.1, 0.1]]]).expand(2, 2, 4)
    with attn.bound(lambda: boxes, mask8, {"c4": (level, mask4)}):
        out, _ = attn(torch.zeros(2, 2, 2), memory, memory, key_padding_mask=~mask8.flatten(1))
    real8 = torch.tensor([[8.0, 6.0], [5.0, 4.0]])  # (width, height) per image
    real4 = torch.tensor([[16.0, 12.0], [9.0, 7.0]])
    centre = boxes[..., :2]
    expected = 0.5 * (centre * real8[:, None] - 0.5) + 0.5 * (centre * real4[:, None] - 0.5)
    torch.testing.assert_close(out, expected)
    # A point at the real edge reads one padding column bilinearly: what lies there is not read.
    edge = torch.tensor([[[0.98, 0.5, 0.1, 0.1]]]).expand(2, 1, 4)
    reads = []
    for garbage in (0.0, 100.0):
        with attn.bound(lambda: edge, mask8, {"c4": (level + garbage * ~mask4[:, None], mask4)}):
            reads.append(attn(torch.zeros(2, 1, 2), memory, memory)[0])
    torch.testing.assert_close(reads[0], reads[1])


def test_every_level_starts_on_the_star_and_one_softmax_spans_all_points() -> None:
    dims = ModelDims(8, 3, 2, 2, FocalScoring(), 2, nhead=4, backbone_stages={"c4": 5, "p8": 8})
    attn = BoxDeformableAttention(dims, num_points=2, levels=["c4"])
    box = torch.tensor([[[0.5, 0.4, 0.2, 0.6]]])
    locations, weights = attn.sample_locations(torch.zeros(1, 1, 8), box)
    single = _attention(heads=4, points=2).sample_locations(torch.zeros(1, 1, 8), box)[0]
    torch.testing.assert_close(locations, torch.cat([single, single], dim=3))
    torch.testing.assert_close(weights, torch.full((1, 1, 4, 4), 0.25))
    assert attn.level_proj[0].in_features == 5


def test_levels_the_backbone_does_not_return_or_bind_are_named() -> None:
    dims = ModelDims(8, 3, 2, 2, FocalScoring(), 2, nhead=4, backbone_stages={"p8": 8})
    with pytest.raises(ValueError, match=r"names \['c4'\].*returns \['p8'\].*return_interm_layers"):
        BoxDeformableAttention(dims, levels=["c4"])
    dims = ModelDims(8, 3, 2, 2, FocalScoring(), 2, nhead=4, backbone_stages={"c4": 4, "p8": 8})
    attn = BoxDeformableAttention(dims, levels=["c4"])
    with pytest.raises(ValueError, match=r"reads the levels \['c4'\]: bind their maps"):
        with attn.bound(lambda: torch.rand(1, 1, 4), torch.ones(1, 4, 4, dtype=torch.bool)):
            pass


def _multiscale_model(**kwargs):
    attention = partial(BoxDeformableAttention, num_points=2, levels=["c4"])
    backbone = CompactBackbone(width=16, return_interm_layers=True)
    return levers.compact_model(backbone, cross_attention=attention, **kwargs)


@pytest.mark.parametrize("detach_memory", [False, True])
def test_the_decoder_reads_the_trunks_stride4_stage_detached_with_the_memory(
    detach_memory: bool,
) -> None:
    """Every decoder layer reads the trunk's stride-4 map (width channels, H/4 x W/4, its
    padding mask at that size); it carries the trunk's gradient unless the memory is detached."""
    model = _multiscale_model(detach_memory=detach_memory)
    seen: list[tuple[tuple[int, ...], bool, int]] = []

    def record(module: BoxDeformableAttention, _args: tuple, _kwargs: dict) -> None:
        features, mask = module._stages["c4"]
        seen.append((tuple(features.shape), features.requires_grad, int(mask.sum())))

    for layer in model.transformer.decoder.layers:
        layer.multihead_attn.register_forward_pre_hook(record, with_kwargs=True)
    pixels, mask, targets = levers.batch()  # image 1 is real on 64 of its 96 columns
    model(pixels, mask, targets=targets)
    assert seen == [((2, 16, 16, 24), not detach_memory, 16 * 24 + 16 * 16)] * 2


def test_attention_maps_of_the_multiscale_decoder_sum_to_one_over_the_map() -> None:
    model = _multiscale_model().eval()
    pixels, mask, _ = levers.batch()
    with torch.no_grad(), AttentionCapture(model, encoder=False) as capture:
        model(pixels, mask)
    sums = capture.maps().decoder.flatten(2).sum(-1)
    assert ((sums > 0.5) & (sums <= 1 + 1e-5)).all()


def test_reading_a_level_then_projecting_equals_projecting_the_map_then_reading() -> None:
    """Deformable DETR projects every pixel of a level and reads the projected values; the
    module reads the raw level and projects the reads. Inside the image (bias included) the
    two agree; here a brute-force projected map read with grid_sample, head by head."""
    torch.manual_seed(2)
    dims = ModelDims(8, 3, 2, 2, FocalScoring(), 2, nhead=2, backbone_stages={"c4": 3, "p8": 8})
    attn = BoxDeformableAttention(dims, num_points=3, levels=["c4"])
    proj = attn.level_proj[0]
    with torch.no_grad():
        proj.bias.normal_()
    features = torch.randn(2, 3, 6, 10)
    mask = torch.ones(2, 6, 10, dtype=torch.bool)
    mask[1, :, 7:] = False
    locations = torch.rand(2, 4, 2, 3, 2) * 0.8 + 0.1  # inside each image's real extent
    weights = torch.rand(2, 4, 2, 3) / 6  # a share of a softmax over two levels
    out = attn._read_level(features, mask, proj, locations, weights)
    projected = proj(features.permute(0, 2, 3, 1)).view(2, 6, 10, 2, 4)  # [B, h, w, H, d/H]
    ratios = torch.tensor([[1.0, 1.0], [0.7, 1.0]])  # real share of (width, height)
    for head in range(2):
        values = projected[..., head, :].permute(0, 3, 1, 2)  # [B, d/H, h, w]
        grid = 2 * locations[:, :, head] * ratios[:, None, None] - 1  # [B, Q, P, 2]
        read = torch.nn.functional.grid_sample(values, grid, align_corners=False)
        expected = (read * weights[:, None, :, head]).sum(-1).transpose(1, 2)  # [B, Q, d/H]
        torch.testing.assert_close(out[:, :, head], expected, atol=1e-5, rtol=1e-5)


def test_fresh_deformable_points_of_every_head_reach_the_box_border():
    """Module docstring: head h looks along direction 2 pi h / H, point k at (k + 1) / P of
    the half-box, so the last point lies on the box's border (a corner for the diagonal heads
    of H = 8): max(|dx| / (w / 2), |dy| / (h / 2)) == 1 for every head."""
    import math

    from detr_lightning.convergence.deformable_attention import BoxDeformableAttention

    attn = BoxDeformableAttention(levers.dims(d_model=16, nhead=8), num_points=3)
    box = torch.tensor([[[0.5, 0.5, 0.4, 0.2]]])
    loc, _ = attn.sample_locations(torch.zeros(1, 1, 16), box)  # [1, 1, 8, 3, 2]
    last = loc[0, 0, :, -1]  # each head's farthest point
    rel = torch.stack([(last[:, 0] - 0.5) / 0.2, (last[:, 1] - 0.5) / 0.1], -1)
    torch.testing.assert_close(rel.abs().max(-1).values, torch.ones(8))
    # Head 1 (45 degrees) ends on the corner (cx + w/2, cy + h/2).
    torch.testing.assert_close(last[1], torch.tensor([0.7, 0.6]))
    assert math.isclose(float(loc[0, 0, 0, 0, 0]), 0.5 + 0.2 / 3, rel_tol=1e-5)
