"""ConvergenceDETR: with learned queries only it is the paper's DETR; each component adds its
training outputs, vanishes at inference, and impossible combinations fail naming the keys."""

import re

import levers
import pytest
import torch

from detr_lightning.convergence.center_matcher import CenterMatcher
from detr_lightning.convergence.criterion import ConvergenceCriterion
from detr_lightning.convergence.focal_scoring import FocalScoring
from detr_lightning.convergence.model import ConvergenceDETR
from detr_lightning.convergence.proposals import EncoderProposals
from detr_lightning.detr.backbone import Backbone
from detr_lightning.detr.model import DETR
from detr_lightning.detr.transformer import Transformer
from detr_lightning.loss import HungarianMatcher, SetCriterion


def test_learned_queries_alone_are_the_paper_model():
    plain = DETR(*levers.parts(), num_classes=3, num_queries=5)
    convergence = levers.model()
    # Same parameters but for the query embedding's name, and the same numbers.
    renamed = {
        k.replace("query_embed.", "queries.embed."): v for k, v in plain.state_dict().items()
    }
    assert renamed.keys() == convergence.state_dict().keys()
    convergence.load_state_dict(renamed)
    pixel_values, pixel_mask, targets = levers.batch()
    for mode in ("train", "eval"):
        getattr(plain, mode)()
        getattr(convergence, mode)()
        expected = plain(pixel_values, pixel_mask)
        got = convergence(pixel_values, pixel_mask, targets=targets)
        assert got.keys() == expected.keys()
        torch.testing.assert_close(got["pred_logits"], expected["pred_logits"])
        torch.testing.assert_close(got["pred_boxes"], expected["pred_boxes"])


@pytest.mark.parametrize("box_refine", [False, True])
def test_levers_add_training_outputs_and_vanish_at_inference(box_refine):
    queries = levers.anchors(groups=3) if box_refine else levers.learned(groups=3)
    model = levers.model(
        scoring=FocalScoring(),
        queries=queries,
        box_refinement=levers.REFINE if box_refine else None,
        denoiser=levers.denoiser(groups=2),
    )
    pixel_values, pixel_mask, targets = levers.batch()
    model.train()
    out = model(pixel_values, pixel_mask, targets=targets)
    assert out["pred_logits"].shape == (2, 5, 3)  # focal: no "no object" column
    assert len(out["group_outputs"]) == 2
    assert out["dn_outputs"]["pred_boxes"].shape == (2, 2 * 2, 4)  # 2 dn groups x pad 2
    assert len(out["dn_outputs"]["aux_outputs"]) == 2
    criterion = ConvergenceCriterion(
        3, HungarianMatcher(scoring=FocalScoring()), scoring=FocalScoring()
    )
    losses = criterion(out, targets)
    for key in ("loss_ce", "loss_bbox_g1", "loss_giou_g2_1", "loss_ce_dn", "loss_bbox_dn_0"):
        assert torch.isfinite(losses[key]), key
    criterion.weighted_total(losses).backward()
    assert model.denoiser.label_embed.weight.grad.abs().sum() > 0  # dn queries are trained

    model.eval()
    out = model(pixel_values, pixel_mask, targets=targets)
    assert set(out) == {"pred_logits", "pred_boxes", "aux_outputs"}
    assert out["pred_boxes"].shape == (2, 5, 4)
    assert 0 <= out["pred_boxes"].min() and out["pred_boxes"].max() <= 1


def test_levers_disabled_losses_vanish():
    model = levers.model()
    pixel_values, pixel_mask, targets = levers.batch()
    losses = SetCriterion(3, HungarianMatcher())(model(pixel_values, pixel_mask, targets), targets)
    assert not [k for k in losses if re.search(r"_(dn|g\d+)(_\d+)?$", k)]
    assert {"loss_ce", "loss_bbox", "loss_giou", "loss_ce_1"} <= set(losses)


def test_matching_queries_do_not_see_denoising_queries():
    """Changing the ground truth (hence the dn queries) must not move matching predictions."""
    model = levers.model(
        queries=levers.anchors(), box_refinement=levers.REFINE, denoiser=levers.denoiser(3)
    )
    model.train()
    pixel_values, pixel_mask, targets = levers.batch()
    first = model(pixel_values, pixel_mask, targets=targets)
    moved = [
        {"labels": (t["labels"] + 1) % 3, "boxes": t["boxes"].flip(0).roll(1, -1)} for t in targets
    ]
    second = model(pixel_values, pixel_mask, targets=moved)
    torch.testing.assert_close(first["pred_boxes"], second["pred_boxes"])
    assert not torch.allclose(first["dn_outputs"]["pred_boxes"], second["dn_outputs"]["pred_boxes"])


def test_box_refine_starts_every_layer_at_its_anchor():
    """Per-layer box heads start at zero, so a fresh model predicts its anchors at every layer."""
    model = levers.model(
        scoring=FocalScoring(), queries=levers.anchors(), box_refinement=levers.REFINE
    )
    assert len(model.box_refinement.layer_bbox_embed) == 2  # 3 layers: 2 heads + bbox_embed
    model.eval()
    out = model(*levers.batch()[:2])
    anchors = model.queries.anchor_embed.weight.sigmoid().expand(2, -1, -1)
    for boxes in [out["pred_boxes"], *(aux["pred_boxes"] for aux in out["aux_outputs"])]:
        torch.testing.assert_close(boxes, anchors, atol=1e-4, rtol=0)


def test_class_prior_decoder_starts_with_the_selected_proposals():
    model = levers.compact_model(
        queries=levers.proposals("conv", class_prior=True, box_vote=0.6)
    ).train()
    pixels, mask, _ = levers.batch(48)
    mask[:] = True
    out = model(pixels, mask)
    enc = out["enc_outputs"]
    # The decoder's queries are the 5 selected proposals; a fresh decoder keeps their boxes
    # and logits (zero-initialised box and class corrections).
    ((features, small),) = model.backbone(pixels, mask)
    pos = model.position_encoding(small)
    memory = model.transformer.encode(model.input_proj(features), small, pos)[0]
    proposals = model.queries.head(memory, small)
    torch.testing.assert_close(proposals["pred_logits"], enc["pred_logits"])
    want_boxes, _, want_logits = model.queries.head.select(proposals, small, 5)
    for layer in [*out["aux_outputs"], out]:
        torch.testing.assert_close(layer["pred_logits"], want_logits)
        torch.testing.assert_close(layer["pred_boxes"], want_boxes, atol=1e-5, rtol=0)
    # At inference the same decoder runs (no enc_outputs, no denoising).
    model.eval()
    assert "enc_outputs" not in model(pixels, mask)


@pytest.mark.parametrize("detach", [True, False])
def test_detach_memory_keeps_decoder_gradients_out_of_the_backbone(detach):
    model = levers.compact_model(detach_memory=detach, denoiser=levers.denoiser(2)).train()
    pixels, mask, targets = levers.batch(48)
    out = model(pixels, mask, targets=targets)
    criterion = ConvergenceCriterion(3, HungarianMatcher(scoring=FocalScoring()), scoring=FocalScoring(),
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


def test_two_stage_model_trains_the_backbone_through_the_encoder_head():
    backbone = Backbone("resnet18", norm="bn", last_stage="layer3")
    model = levers.model(
        backbone, 1, 2, num_queries=6, scoring=FocalScoring(), queries=levers.proposals("linear"),
        box_refinement=levers.REFINE, denoiser=levers.denoiser(2),
    )  # fmt: skip
    pixel_values = torch.randn(2, 3, 64, 96)
    pixel_mask = torch.ones(2, 64, 96, dtype=torch.bool)
    pixel_mask[1, :, 48:] = False
    targets = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])}] * 2
    out = model(pixel_values, pixel_mask, targets=targets)
    assert out["enc_outputs"]["pred_logits"].shape == (2, 4 * 6, 3)  # one proposal per token
    assert out["pred_boxes"].shape == (2, 6, 4)
    criterion = ConvergenceCriterion(
        3, HungarianMatcher(scoring=FocalScoring()), scoring=FocalScoring(), encoder_matches=2
    )
    losses = criterion(out, targets)
    assert {"loss_ce_enc", "loss_bbox_enc", "loss_giou_enc", "loss_ce_dn"} <= losses.keys()
    (losses["loss_ce_enc"] + losses["loss_giou_enc"]).backward()
    assert model.backbone.body.get_parameter("layer3.0.conv1.weight").grad.abs().sum() > 0
    model.eval()
    assert "enc_outputs" not in model(pixel_values, pixel_mask)


def test_encoder_aux_head_trains_the_backbone_and_leaves_the_decoder_alone():
    from functools import partial

    torch.manual_seed(0)
    backbone = Backbone("resnet18", norm="bn", last_stage="layer3", train_stem=True)
    model = levers.model(backbone, 1, 2, scoring=FocalScoring(), aux_head=partial(EncoderProposals))
    pixel_values = torch.randn(2, 3, 64, 64)
    targets = [{"labels": torch.tensor([2]), "boxes": torch.tensor([[0.3, 0.6, 0.2, 0.3]])}] * 2
    out = model(pixel_values, targets=targets)
    assert out["enc_outputs"]["cells"].shape == (2, 16, 4)  # 4 x 4 tokens at stride 16
    # The decoder is the paper's: the same weights without the aux head give the same outputs.
    head, model.aux_head = model.aux_head, None
    plain = model(pixel_values, targets=targets)
    torch.testing.assert_close(out["pred_boxes"], plain["pred_boxes"])
    torch.testing.assert_close(
        out["aux_outputs"][0]["pred_logits"], plain["aux_outputs"][0]["pred_logits"]
    )
    assert "enc_outputs" not in plain
    model.aux_head = head
    criterion = ConvergenceCriterion(
        3,
        HungarianMatcher(scoring=FocalScoring()),
        scoring=FocalScoring(),
        encoder_matcher=CenterMatcher(),
    )
    losses = criterion(out, targets)
    model.zero_grad()
    (losses["loss_ce_enc"] + losses["loss_bbox_enc"]).backward()
    assert model.backbone.body.get_parameter("conv1.weight").grad.abs().sum() > 0
    assert model.class_embed.weight.grad is None  # only the aux head and what feeds it
    model.eval()
    assert "enc_outputs" not in model(pixel_values, targets=targets)


# Former silent combinations of AcceleratedDETR's flags: each is now an error naming the keys.
def test_reference_queries_without_box_refinement_are_explained():
    with pytest.raises(ValueError, match="model.net.box_refinement"):
        levers.model(queries=levers.anchors())
    with pytest.raises(ValueError, match="model.net.box_refinement"):
        levers.compact_model(box_refinement=None)


def test_box_refinement_without_reference_boxes_is_explained():
    with pytest.raises(ValueError, match="queries=anchors or queries=proposals"):
        levers.model(box_refinement=levers.REFINE)


def test_aux_head_with_proposal_queries_is_explained():
    # encoder_aux_head used to be silently ignored with two_stage.
    from functools import partial

    with pytest.raises(ValueError, match="model.net.aux_head"):
        levers.compact_model(aux_head=partial(EncoderProposals))


def test_query_levers_need_attention_positions():
    backbone, pos, _ = levers.parts()
    transformer = Transformer(d_model=32, nhead=4, num_encoder_layers=0, num_decoder_layers=2,
                              query_pos="input")  # fmt: skip
    with pytest.raises(ValueError, match="query_pos=attn"):
        ConvergenceDETR(backbone, pos, transformer, 3, 5, denoiser=levers.denoiser())


def test_detach_memory_alone_takes_effect():
    # It used to be silently ignored when no other training lever was on.
    model = levers.model(detach_memory=True)
    pixel_values, pixel_mask, targets = levers.batch()
    out = model(pixel_values, pixel_mask, targets=targets)
    SetCriterion(3, HungarianMatcher())(out, targets)["loss_ce"].backward()
    assert model.input_proj.weight.grad is None


def test_class_prior_and_peaks_exist_only_on_proposal_queries():
    # class_prior / proposal_tower / proposal_peaks used to be silently ignored without
    # two_stage (tower and peaks also with the linear head): now they are arguments of the
    # proposal components only, so the combination cannot be written.
    from detr_lightning.convergence.queries import LearnedQueries

    with pytest.raises(TypeError):
        levers.model(queries=lambda dims: LearnedQueries(dims, class_prior=True))
    with pytest.raises(TypeError):
        EncoderProposals(8, 3, True, tower_layers=2)


class _TransposedQueries(torch.nn.Module):
    """A new query source with the content's axes swapped ([B, d, Q]: a typical slip)."""

    uses_reference = False

    def __init__(self, dims) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(dims.num_queries, dims.d_model)

    def forward(self, enc):
        from detr_lightning.convergence.queries import DecoderQueries

        b = enc.memory.shape[0]
        position = self.embed.weight.unsqueeze(0).expand(b, -1, -1)
        return DecoderQueries(torch.zeros_like(position).transpose(1, 2), position)


def test_a_query_source_breaking_the_contract_is_named_before_the_decoder() -> None:
    model = levers.model(queries=_TransposedQueries)
    x, mask = torch.randn(2, 3, 64, 64), torch.ones(2, 64, 64, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"queries=_TransposedQueries returned content of shape "
                                         r"\(2, 32, 5\).*\[2, 5, 32\]"):  # fmt: skip
        model(x, mask)


@pytest.mark.parametrize("refine", [True, False])
def test_a_batch_without_objects_gives_every_weight_a_gradient(refine):
    """DDP (``find_unused_parameters=false``) stops a run when one rank's weights get no gradient
    in a step: a batch without objects has no denoising queries, yet the denoiser's label
    embedding (and, without box refinement, the head that embeds the noised boxes) must take
    part, with a zero gradient, as on a rank whose batch has objects."""
    torch.manual_seed(0)
    if refine:
        model = levers.compact_model(denoiser=levers.denoiser()).train()
    else:
        model = levers.model(queries=levers.learned(), denoiser=levers.denoiser()).train()
    pixel_values, pixel_mask, _ = levers.batch(48)
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 2
    plain = model(pixel_values, pixel_mask, targets=None)  # no denoiser at all: the reference
    out = model(pixel_values, pixel_mask, targets=empty)
    assert torch.equal(out["pred_boxes"], plain["pred_boxes"])  # the tie changes no value
    total = sum(v.sum() for k, v in out.items() if k in ("pred_logits", "pred_boxes"))
    total = total + sum(o["pred_boxes"].sum() for o in out.get("aux_outputs", []))
    total = total + sum(v.sum() for v in out.get("enc_outputs", {}).values() if v.requires_grad)
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert model.denoiser.label_embed.weight.grad.abs().sum() == 0
