"""DETR wiring: heads, aux outputs, box MLP, build_detr, and padding-mask propagation."""

import pytest
import torch
from torch import nn

from detr_lightning.detr.model import build_detr
from detr_lightning.detr.set_detector import MLP

SMALL = dict(
    backbone="resnet18", num_classes=5, num_queries=7, hidden_dim=32, nheads=4,
    enc_layers=2, dec_layers=3, dim_feedforward=64,
)  # fmt: skip


def test_mlp_is_linear_relu_linear_relu_linear() -> None:
    mlp = MLP(8, 16, 4, 3)
    assert [(m.in_features, m.out_features) for m in mlp.layers] == [(8, 16), (16, 16), (16, 4)]
    x = torch.randn(2, 5, 8)
    l0, l1, l2 = mlp.layers
    expected = x @ l0.weight.T + l0.bias
    expected = expected.clamp(min=0) @ l1.weight.T + l1.bias
    expected = expected.clamp(min=0) @ l2.weight.T + l2.bias
    torch.testing.assert_close(mlp(x), expected)


def test_outputs_and_aux_outputs_come_from_every_decoder_layer() -> None:
    model = build_detr(**SMALL, dropout=0.0).eval()
    x = torch.randn(2, 3, 64, 96)
    mask = torch.ones(2, 64, 96, dtype=torch.bool)
    mask[1, :, 64:] = False
    out = model(x, mask)
    assert set(out) == {"pred_logits", "pred_boxes", "aux_outputs"}
    assert out["pred_logits"].shape == (2, 7, 6) and out["pred_boxes"].shape == (2, 7, 4)
    assert len(out["aux_outputs"]) == 2
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()

    # Independent recomposition of the forward pass from the parts.
    feat, fmask = model.backbone(x, mask)[-1]
    pos = model.position_encoding(fmask)
    hs, _ = model.transformer(model.input_proj(feat), fmask, model.query_embed.weight, pos)
    per_layer = [out["aux_outputs"][0], out["aux_outputs"][1], out]
    for layer, pred in enumerate(per_layer):
        torch.testing.assert_close(pred["pred_logits"], model.class_embed(hs[layer]))
        torch.testing.assert_close(pred["pred_boxes"], model.bbox_embed(hs[layer]).sigmoid())


def test_no_aux_outputs_without_aux_loss() -> None:
    model = build_detr(**SMALL, aux_loss=False).eval()
    out = model(torch.randn(1, 3, 64, 64), torch.ones(1, 64, 64, dtype=torch.bool))
    assert set(out) == {"pred_logits", "pred_boxes"}


def test_build_detr_wires_hyper_parameters() -> None:
    model = build_detr(
        **SMALL, pre_norm=True, position_embedding="learned", train_backbone=False, use_ffn=False
    )
    assert model.class_embed.out_features == 6 and model.query_embed.weight.shape == (7, 32)
    assert model.input_proj.in_channels == 512 and model.input_proj.out_channels == 32
    assert len(model.transformer.encoder.layers) == 2 and len(model.transformer.decoder.layers) == 3
    assert model.transformer.encoder.norm is not None  # pre-norm adds the final encoder norm
    assert model.position_encoding.row_embed.weight.shape == (50, 16)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not hasattr(model.transformer.encoder.layers[0], "linear1")


def test_backward_reaches_trainable_parts_only() -> None:
    model = build_detr(**SMALL)
    out = model(torch.randn(1, 3, 64, 64), torch.ones(1, 64, 64, dtype=torch.bool))
    loss = out["pred_logits"].sum() + out["pred_boxes"].sum()
    loss = loss + sum(a["pred_logits"].sum() for a in out["aux_outputs"])
    loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    assert model.backbone.body.get_submodule("layer1.0.conv1").weight.grad is None


class _PatchBody(nn.Module):
    """Stride-32 patchify conv: each feature cell sees exactly its own 32x32 pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 512, kernel_size=32, stride=32)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"layer4": self.conv(x)}


@pytest.mark.parametrize("position_embedding", ["sine", "learned"])
def test_padding_does_not_change_predictions(position_embedding: str) -> None:
    """An image batched with a larger one predicts as it does alone, whatever the padding holds.

    A ResNet's 3x3/7x7 convolutions let real pixels spill into the padding and back into the real
    border cells, so no DETR (the official one included) is exactly padding-invariant at the pixel
    level. The contract is that nothing after the backbone reads padded positions: the mask is
    resized to the feature map, the sine encoding is normalised over real cells, and attention
    never attends to padding. To test exactly that, the ResNet trunk is swapped for a patchify
    conv whose receptive field equals its stride, and the padding is filled with garbage.
    """
    model = build_detr(**SMALL, dropout=0.0, position_embedding=position_embedding).eval()
    model.backbone.body = _PatchBody()
    image = torch.randn(1, 3, 64, 96)
    alone = model(image, torch.ones(1, 64, 96, dtype=torch.bool))

    canvas = 50 * torch.randn(2, 3, 128, 160)  # garbage everywhere outside the real region
    canvas[0, :, :64, :96] = image[0]
    mask = torch.zeros(2, 128, 160, dtype=torch.bool)
    mask[0, :64, :96] = True
    mask[1] = True
    padded = model(canvas, mask)
    for key in ("pred_logits", "pred_boxes"):
        torch.testing.assert_close(padded[key][:1], alone[key], atol=1e-4, rtol=1e-4)
        for aux_padded, aux_alone in zip(padded["aux_outputs"], alone["aux_outputs"], strict=True):
            torch.testing.assert_close(aux_padded[key][:1], aux_alone[key], atol=1e-4, rtol=1e-4)
    # Sanity check that the garbage is visible to the model where the mask is not applied.
    mask[0] = True
    assert not torch.allclose(
        model(canvas, mask)["pred_logits"][:1], alone["pred_logits"], atol=1e-3
    )
