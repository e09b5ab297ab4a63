"""prepare_for_inference: the predict graph gives the validation graph's outputs."""

import copy

import torch

from detr_lightning.detr.fast_inference import prepare_for_inference
from detr_lightning.detr.model import build_detr


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
