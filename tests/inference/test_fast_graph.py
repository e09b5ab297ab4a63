"""prepare_for_inference: the predict graph gives the validation graph's outputs."""

import copy
from functools import partial

import levers
import torch

from detr_lightning.convergence import conv_proposals
from detr_lightning.convergence.compact_trunk import CompactBackbone
from detr_lightning.convergence.deformable_attention import BoxDeformableAttention
from detr_lightning.detr.model import build_detr
from detr_lightning.inference.fast_graph import prepare_for_inference


def _net():
    torch.manual_seed(0)
    return build_detr("resnet18", num_classes=4, hidden_dim=32, nheads=4, enc_layers=1,
                      dec_layers=2, dim_feedforward=64, num_queries=6).eval()  # fmt: skip


def test_folded_channels_last_float32_matches_the_training_graph() -> None:
    net = _net()
    x, mask = torch.randn(2, 3, 64, 96), torch.ones(2, 64, 96, dtype=torch.bool)
    mask[1, :, 64:] = False
    with torch.no_grad():
        ref = net(x, mask)
        fast = prepare_for_inference(copy.deepcopy(net))
        out = fast(x, mask)
    assert not any("running_mean" in k for k in fast.net.state_dict())  # folded away
    torch.testing.assert_close(out["pred_boxes"], ref["pred_boxes"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["pred_logits"], ref["pred_logits"], atol=1e-4, rtol=1e-4)


def test_bf16_returns_float32_outputs_close_to_float32() -> None:
    net = _net()
    x, mask = torch.randn(1, 3, 64, 64), torch.ones(1, 64, 64, dtype=torch.bool)
    with torch.no_grad():
        ref = net(x, mask)
        out = prepare_for_inference(copy.deepcopy(net), dtype="bfloat16")(x, mask)
    assert out["pred_boxes"].dtype == torch.float32
    assert all(a["pred_logits"].dtype == torch.float32 for a in out["aux_outputs"])
    assert (out["pred_boxes"] - ref["pred_boxes"]).abs().max() < 0.05


def test_bf16_runs_the_shapes_preset_model_with_deformable_cross_attention(monkeypatch) -> None:
    """The shapes preset's model (compact trunk, conv proposals, refinement, focal, deformable
    cross-attention reading the memory and the stride-4 stage with ``grid_sample``) in bf16."""
    net = levers.compact_model(
        backbone=CompactBackbone(width=16, return_interm_layers=True),
        cross_attention=partial(BoxDeformableAttention, num_points=4, levels=["c4"]),
    ).eval()
    with torch.no_grad():  # query-dependent points and weights, not only the initial star
        for layer in net.transformer.decoder.layers:
            layer.multihead_attn.sampling_offsets.weight.normal_(0, 0.3)
            layer.multihead_attn.attention_weights.weight.normal_(0, 0.3)
    # An untrained head's proposal scores tie within bf16's rounding, so bf16 and fp32 would
    # pick different cells as queries. A fixed random ranking of the 96 cells in steps of 8 on
    # top of the scores (in [0, 1], a non-peak's lowered by 2; bf16 rounds <= 760 in steps of
    # at most 4) keeps one order in both dtypes, so both decode the same proposals.
    score = conv_proposals.best_class_probability

    def ranked(logits, *args, **kwargs):
        best = score(logits, *args, **kwargs)
        rank = torch.randperm(best.shape[-1], generator=torch.Generator().manual_seed(0))
        return best + 8.0 * rank.to(best.dtype)

    monkeypatch.setattr(conv_proposals, "best_class_probability", ranked)
    x, mask = torch.randn(2, 3, 64, 96), torch.ones(2, 64, 96, dtype=torch.bool)
    mask[1, :, 64:] = False  # a padded image: the reads are scaled by its real extent
    with torch.no_grad():
        ref = net(x, mask)
        out = prepare_for_inference(copy.deepcopy(net), dtype="bfloat16")(x, mask)
    assert out["pred_boxes"].dtype == torch.float32
    assert torch.isfinite(out["pred_boxes"]).all() and torch.isfinite(out["pred_logits"]).all()
    # bf16 keeps 8 significant bits (relative rounding 2^-9 per op): through the trunk, the
    # proposals and two refined decoder layers the boxes stay within 0.02 of the image size
    # (0.0065 measured; a cell of the proposal map is 1/12 of the width)
    assert (out["pred_boxes"] - ref["pred_boxes"]).abs().max() < 0.02
