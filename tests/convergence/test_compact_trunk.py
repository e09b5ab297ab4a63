"""The compact stride-8 trunk: its map, mask and errors."""

import pytest
import torch

from detr_lightning.convergence.compact_trunk import CompactBackbone, SubsampledPointwise


def test_compact_backbone_gives_a_stride_8_map_and_its_mask():
    backbone = CompactBackbone(width=16)
    assert backbone.num_channels == 48
    pixels = torch.randn(2, 3, 75, 64)
    mask = torch.zeros(2, 75, 64, dtype=torch.bool)
    mask[0] = True
    mask[1, :40, :32] = True  # image 1: 40 x 32 real pixels, the rest padding
    ((features, small_mask),) = backbone(pixels, mask)
    assert features.shape == (2, 48, 10, 8)  # ceil(75 / 8), 64 / 8
    assert small_mask[0].all()
    # Nearest resize: map row i reads pixel row floor(7.5 i), column j pixel column 8 j; rows
    # 0-5 (pixels 0-37) and columns 0-3 (pixels 0-24) fall on image 1's real 40 x 32 pixels.
    expected = torch.zeros(10, 8, dtype=torch.bool)
    expected[:6, :4] = True
    assert small_mask[1].equal(expected)
    assert all(p.requires_grad for p in backbone.parameters())
    # With its intermediate levels (the panoptic mask head reads them): strides 4, 8, 8.
    levels = CompactBackbone(width=16, return_interm_layers=True)(pixels, mask)
    assert [f.shape[1:] for f, _ in levels] == [(16, 19, 16), (32, 10, 8), (48, 10, 8)]


@pytest.mark.parametrize("kwargs", [{"pretrained": True}, {"dilation": True}, {"norm": "bn"}])
def test_compact_backbone_has_no_resnet_only_options(kwargs):
    # These used to be accepted and silently ignored by Backbone(name="compact").
    with pytest.raises(TypeError):
        CompactBackbone(**kwargs)


def test_compact_backbone_rejects_odd_widths():
    with pytest.raises(ValueError, match="compact"):
        CompactBackbone(width=7)


def test_fuse_stride4_adds_a_strided_conv_of_the_stride_4_stage():
    torch.manual_seed(0)
    fused = CompactBackbone(width=16, fuse_stride4=True).eval()
    plain = CompactBackbone(width=16).eval()
    # Every weight but the new path's is shared, so the outputs differ by that path alone.
    result = plain.load_state_dict(fused.state_dict(), strict=False)
    assert sorted(result.unexpected_keys) == ["body.down4.bias", "body.down4.weight"]
    assert not result.missing_keys
    pixels = torch.randn(2, 3, 75, 61)  # odd sizes: stride-4 19 x 16 -> stride-8 10 x 8
    with torch.no_grad():
        out, base = fused.body(pixels), plain.body(pixels)
        c4 = out["c4"]
        # Independent of the module: output cell (i, j) reads stride-4 cells 2i-1..2i+1.
        padded = torch.nn.functional.pad(c4, (1, 1, 1, 1))
        weight, bias = fused.body.down4.weight, fused.body.down4.bias
        expected = torch.zeros_like(base["p8"])
        for i in range(expected.shape[2]):
            for j in range(expected.shape[3]):
                patch = padded[:, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
                expected[:, :, i, j] = torch.einsum("bcyx,ocyx->bo", patch, weight) + bias
    assert out["p8"].shape == base["p8"].shape == (2, 48, 10, 8)
    torch.testing.assert_close(out["p8"] - base["p8"], expected, atol=1e-4, rtol=1e-4)


def _reach(backbone: CompactBackbone, size: int = 256) -> int:
    """Largest distance in pixels (along a row and a column) from the map's corner cell (0, 0)
    to an input pixel that its output depends on: the receptive field, found by autograd."""
    pixels = torch.randn(1, 3, size, size, requires_grad=True)
    backbone.body(pixels)["p8"][0, :, 0, 0].sum().backward()
    reached = pixels.grad.abs().sum(1)[0] > 0  # [H, W]
    return int(max(reached.any(0).nonzero().max(), reached.any(1).nonzero().max()))


def test_stride32_widens_the_receptive_field_of_every_cell():
    # By hand, back from output cell 0: a 3x3 conv of stride s reads input cells up to
    # s * (its last output cell) + 1; nearest upsampling and 1x1 convs read cell 0. Without the
    # stride-32 stage the deepest path (stage16's two convs, stage8's two, stage4's two, the
    # stem's two) reaches 1, 3 | 4, 9 | 10, 11 | 23, 47: pixel 47. The stage's two convs first
    # reach stride-16 cell 3, and then the same path reaches 4, 9 | 10, 21 | 22, 23 | 47, 95.
    torch.manual_seed(0)
    # In eval mode: training's batch statistics would couple every pixel to every cell.
    plain, wide = CompactBackbone(width=8).eval(), CompactBackbone(width=8, stride32=True).eval()
    assert _reach(plain) == 47
    assert _reach(wide) == 95
    # The stage adds two BasicBlock convolutions and a lateral at stride 32 and nothing else.
    result = plain.load_state_dict(wide.state_dict(), strict=False)
    assert {k.split(".")[1] for k in result.unexpected_keys} == {"stage32", "lateral32"}
    assert not result.missing_keys


def test_subsampled_pointwise_is_a_strided_1x1_convolution():
    torch.manual_seed(0)
    conv = SubsampledPointwise(8, 16, 2)
    x = torch.randn(2, 8, 65, 64, requires_grad=True)
    out = conv(x.contiguous(memory_format=torch.channels_last))
    expected = torch.nn.functional.conv2d(x, conv.weight, stride=2)  # contiguous: a sound kernel
    assert out.shape == (2, 16, 33, 32)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.square().sum(), (x, conv.weight))
    expected_grads = torch.autograd.grad(expected.square().sum(), (x, conv.weight))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_narrow_trunk_trains_on_large_images_as_in_contiguous_memory():
    # A width-8 trunk's strided shortcut used to abort the process in its channels-last backward
    # (SubsampledPointwise); the same trunk run in contiguous memory gives the expected grads.
    torch.manual_seed(0)
    backbone = CompactBackbone(width=8).train()
    pixels = torch.randn(1, 3, 256, 256)
    grads = []
    for fmt in (torch.channels_last, torch.contiguous_format):
        backbone.zero_grad()
        backbone.body.to(memory_format=fmt)
        backbone.body(pixels.contiguous(memory_format=fmt))["p8"].square().mean().backward()
        grads.append([p.grad.clone() for p in backbone.parameters()])
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)
