"""Attention capture: shapes, normalisation, untouched outputs, DETR and ConvergenceDETR."""

from __future__ import annotations

import levers
import pytest
import torch
from lit import tiny_lit

from detr_lightning.inference.attention import AttentionCapture
from detr_lightning.inference.attention_plot import reference_points
from detr_lightning.inference.explain import attention_figures


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    pixels = torch.randn(2, 3, 96, 128)
    mask = torch.ones(2, 96, 128, dtype=torch.bool)
    mask[1, :, 64:] = False  # the second image is half padding
    pixels[1, :, :, 64:] = 0
    return pixels, mask


@torch.no_grad()
def test_maps_have_the_feature_map_shape_and_sum_to_one_over_keys() -> None:
    net = tiny_lit(num_queries=5, last_stage="layer4").net.eval()
    pixels, mask = _inputs()
    reference = net(pixels, mask)
    with AttentionCapture(net) as capture:
        out = net(pixels, mask)
    maps = capture.maps(num_queries=5)
    h, w = 3, 4  # ResNet stride 32 on 96 x 128
    assert maps.decoder.shape == (2, 5, h, w) and maps.encoder.shape == (2, h, w, h, w)
    assert maps.mask.shape == (2, h, w) and maps.mask[1].sum() == h * 2
    torch.testing.assert_close(maps.decoder.sum((-2, -1)), torch.ones(2, 5))
    torch.testing.assert_close(maps.encoder.sum((-2, -1)), torch.ones(2, h, w))
    assert maps.decoder[1][:, ~maps.mask[1]].abs().max() == 0  # padding gets no attention
    # outputs unchanged (the weights path differs only by float rounding); hooks are gone
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(out[key], reference[key], atol=1e-5, rtol=0)
    assert torch.equal(net(pixels, mask)["pred_logits"], reference["pred_logits"])
    attn = net.transformer.decoder.layers[-1].multihead_attn
    assert not attn._forward_hooks and not attn._forward_pre_hooks


@torch.no_grad()
def test_convergence_detr_is_captured_too_and_without_encoder_layers_has_no_encoder_map() -> None:
    pixels, mask = _inputs()
    net = levers.model(queries=levers.proposals("conv"), box_refinement=levers.REFINE).eval()
    with AttentionCapture(net) as capture:
        out = net(pixels, mask)
    maps = capture.maps(out["pred_logits"].shape[1])
    assert maps.decoder.shape[:2] == (2, 5) and maps.encoder is not None
    torch.testing.assert_close(maps.decoder.sum((-2, -1)), torch.ones(2, 5))
    compact = levers.compact_model().eval()  # the shapes preset: no encoder layer
    with AttentionCapture(compact) as capture:
        out = compact(pixels, mask)
    maps = capture.maps(out["pred_logits"].shape[1])
    assert maps.encoder is None and maps.decoder.shape[-2:] == maps.mask.shape[-2:]


def test_maps_before_a_forward_and_a_model_without_transformer_fail_clearly() -> None:
    net = tiny_lit().net.eval()
    with pytest.raises(RuntimeError, match="run the model"):
        AttentionCapture(net).maps()
    with pytest.raises(TypeError, match="DETR-style"):
        AttentionCapture(torch.nn.Linear(2, 2))


def test_figures_for_each_image_and_reference_points_inside() -> None:
    net = tiny_lit(num_queries=5).net.eval()
    pixels, mask = _inputs()
    images = [torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8),
              torch.randint(0, 255, (3, 96, 64), dtype=torch.uint8)]  # fmt: skip
    figures = attention_figures(net, pixels, mask, images, [1, 2, 3], None, score_threshold=0.0,
                                max_objects=2, num_points=3)  # fmt: skip
    assert len(figures) == 2 and all(f.encoder is not None for f in figures)
    assert len(figures[0].decoder.axes) == 4  # 2 objects x (map, image)
    assert len(figures[0].encoder.axes) == 4  # the image + 3 reference points
    points = reference_points(torch.tensor([[0.0, 0.0, 20.0, 10.0]]), (10, 40), count=3)
    assert points[0] == (0.25, 0.5) and len(points) == 3
    assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in points)


@torch.no_grad()
def test_a_panoptic_model_is_captured_through_its_detector() -> None:
    from detr_lightning.detr import DETR, Backbone, Transformer, build_position_encoding
    from detr_lightning.detr.segmentation import DETRsegm

    detr = DETR(Backbone("resnet18", return_interm_layers=True), build_position_encoding("sine", 32),
                Transformer(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=2,
                            dim_feedforward=64, dropout=0.0), num_classes=3, num_queries=5)  # fmt: skip
    net = DETRsegm(detr).eval()
    pixels, mask = _inputs()
    with AttentionCapture(net) as capture:
        out = net(pixels, mask)
    maps = capture.maps(5)
    assert "pred_masks" in out and maps.decoder.shape == (2, 5, 3, 4)
