"""The shapes preset's levers: compact trunk, conv proposals with peak selection, class prior,
detached memory, cosine lr."""

import math

import pytest
import torch

from detr_lightning.convergence.center_matcher import CenterMatcher
from detr_lightning.convergence.conv_proposals import NON_PEAK_DEMOTION, ConvProposals
from detr_lightning.convergence.model import AcceleratedDETR
from detr_lightning.detr.backbone import Backbone
from detr_lightning.detr.position_encoding import PositionEmbeddingSine
from detr_lightning.detr.transformer import Transformer
from detr_lightning.loss import HungarianMatcher, SetCriterion
from detr_lightning.utils.lr import WarmupStepDecay


def test_compact_backbone_gives_a_stride_8_map_and_its_mask():
    backbone = Backbone("compact", norm="bn", width=16)
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
    frozen = Backbone("compact", norm="bn", width=16, train_backbone=False)
    assert not any(p.requires_grad for p in frozen.parameters())


@pytest.mark.parametrize(
    "kwargs", [{"pretrained": True}, {"dilation": True}, {"norm": "frozen_bn"}, {"width": 7}]
)
def test_compact_backbone_rejects_resnet_only_options(kwargs):
    with pytest.raises(ValueError, match="compact"):
        Backbone("compact", **{"norm": "bn", **kwargs})


def test_fresh_conv_proposals_are_four_cells_around_their_cell():
    head = ConvProposals(8, 3, focal=True)
    mask = torch.zeros(1, 2, 4, dtype=torch.bool)
    mask[0, :, :2] = True  # 2 x 2 real cells, 2 padded columns
    out = head(torch.randn(1, 8, 8), mask)
    boxes = out["pred_boxes"].view(2, 4, 4)
    # Cell (row 0, col 1): centre (0.75, 0.25) of the real image; +-2 cells = +-1.0 wide and
    # high, clipped to the image: x in [0, 1], y in [0, 1].
    torch.testing.assert_close(boxes[0, 1], torch.tensor([0.5, 0.5, 1.0, 1.0]))
    assert out["pred_logits"].shape == (1, 8, 3) and out["features"].shape == (1, 8, 8)
    # Focal prior: every class starts near 1 % (the tower's output is normalised, weights small).
    assert torch.allclose(out["pred_logits"].sigmoid().mean(), torch.tensor(0.01), atol=0.01)


def test_select_prefers_peaks_then_the_rest_and_never_padding():
    head = ConvProposals(4, 2, focal=True)
    mask = torch.ones(1, 3, 3, dtype=torch.bool)
    mask[0, :, 2] = False  # the last column is padding
    logits = torch.full((1, 9, 2), -6.0)
    # Score map (best class): a peak at (0, 0) with a higher neighbour-free peak at (2, 1);
    # (0, 1) is next to (0, 0) and weaker, so not a peak; the padded cell (1, 2) is the largest.
    logits[0, 0, 0] = 3.0
    logits[0, 1, 1] = 2.0
    logits[0, 7, 1] = 5.0
    logits[0, 5, 0] = 9.0  # padding
    boxes = torch.rand(1, 9, 4, requires_grad=True)
    feats = torch.randn(1, 9, 4, requires_grad=True)
    proposals = {"pred_logits": logits, "pred_boxes": boxes, "features": feats}
    scores = head.scores(logits, mask)
    assert torch.isfinite(scores).nonzero()[:, 1].tolist() == [0, 7]  # the two peaks only
    ref, content, prior = head.select(proposals, mask, k=3)
    # Peaks by score (cells 7, 0), then the best non-peak real cell (1); never padding (5).
    torch.testing.assert_close(ref, boxes[:, [7, 0, 1]].detach())
    torch.testing.assert_close(content, feats[:, [7, 0, 1]].detach())
    # The non-peak filler (cell 1, next to the stronger cell 0) starts as "no object".
    torch.testing.assert_close(prior[:, :2], logits[:, [7, 0]])
    torch.testing.assert_close(prior[:, 2], logits[:, 1] - NON_PEAK_DEMOTION)
    assert not (ref.requires_grad or content.requires_grad or prior.requires_grad)
    plain = ConvProposals(4, 2, focal=True, peaks=False)
    assert plain.select(proposals, mask, k=2)[0].equal(boxes[:, [7, 0]].detach())
    # Softmax heads: the filler's no-object column is raised instead.
    softmax = ConvProposals(4, 3, focal=False)
    three = torch.cat([logits, torch.zeros(1, 9, 1)], dim=-1)
    _, _, prior3 = softmax.select({**proposals, "pred_logits": three}, mask, k=3)
    torch.testing.assert_close(prior3[0, 2], three[0, 1] + torch.tensor([0, 0, NON_PEAK_DEMOTION]))
    with pytest.raises(ValueError, match="only 9"):
        head.select(proposals, mask, k=10)


def _model(**levers) -> AcceleratedDETR:
    torch.manual_seed(0)
    return AcceleratedDETR(
        Backbone("compact", norm="bn", width=16),
        PositionEmbeddingSine(16, normalize=True),
        Transformer(
            d_model=32,
            nhead=4,
            num_encoder_layers=0,
            num_decoder_layers=2,
            dim_feedforward=64,
            dropout=0.0,
        ),
        num_classes=3,
        num_queries=5,
        focal=True,
        box_refine=True,
        two_stage=True,
        proposal_head="conv",
        **levers,
    )


def _batch():
    pixels = torch.randn(2, 3, 64, 48)
    targets = [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2],
                                                                [0.6, 0.7, 0.5, 0.4]])},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.3]])},
    ]  # fmt: skip
    return pixels, torch.ones(2, 64, 48, dtype=torch.bool), targets


def test_class_prior_decoder_starts_with_the_selected_proposals():
    model = _model(class_prior=True).train()
    pixels, mask, targets = _batch()
    out = model(pixels, mask)
    enc = out["enc_outputs"]
    # The decoder's queries are the 5 selected proposals; a fresh decoder keeps their boxes
    # and logits (zero-initialised box and class corrections).
    ((features, small),) = model.backbone(pixels, mask)
    pos = model.position_encoding(small)
    memory = model.transformer.encode(model.input_proj(features), small, pos)[0]
    proposals = model.encoder_proposals(memory, small)
    torch.testing.assert_close(proposals["pred_logits"], enc["pred_logits"])
    want_boxes, _, want_logits = model.encoder_proposals.select(proposals, small, 5)
    for layer in [*out["aux_outputs"], out]:
        torch.testing.assert_close(layer["pred_logits"], want_logits)
        torch.testing.assert_close(layer["pred_boxes"], want_boxes, atol=1e-5, rtol=0)
    # At inference the same decoder runs (no enc_outputs, no denoising).
    model.eval()
    assert "enc_outputs" not in model(pixels, mask)
    with pytest.raises(ValueError, match="class_prior"):
        AcceleratedDETR(model.backbone, model.position_encoding, model.transformer, 3, 5,
                        focal=True, box_refine=True, class_prior=True)  # fmt: skip


@pytest.mark.parametrize("detach", [True, False])
def test_detach_memory_keeps_decoder_gradients_out_of_the_backbone(detach):
    model = _model(detach_memory=detach, denoising={"groups": 2}).train()
    pixels, mask, targets = _batch()
    out = model(pixels, mask, targets=targets)
    criterion = SetCriterion(3, HungarianMatcher(focal=True), focal=True,
                             encoder_matcher=CenterMatcher())  # fmt: skip
    losses = criterion(out, targets)
    decoder_only = sum(v for k, v in losses.items() if k.startswith("loss") and "_enc" not in k)
    decoder_only.backward(retain_graph=True)
    stem = model.backbone.body.stem[0].weight
    reached = stem.grad is not None and stem.grad.abs().sum() > 0
    assert reached != detach
    # The dense proposal losses always train the backbone (the classification one here: the
    # fresh box convolution has zero weights, so no box gradient passes it yet).
    model.zero_grad()
    losses["loss_ce_enc"].backward()
    assert stem.grad.abs().sum() > 0


def test_cosine_schedule_values():
    factor = WarmupStepDecay(warmup_steps=4, milestone_steps=[], gamma=0.1, cosine_steps=100)
    assert factor(0) == pytest.approx(0.25 * 1.0)
    assert factor(3) == pytest.approx(1.0 * 0.5 * (1 + math.cos(math.pi * 3 / 100)))
    assert factor(50) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0, abs=1e-12) and factor(150) == pytest.approx(0.0)
    # Milestones still multiply: a drop at step 50 halves... by gamma.
    stepped = WarmupStepDecay(0, [50], 0.1, cosine_steps=100)
    assert stepped(75) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 0.75)))
