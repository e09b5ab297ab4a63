"""SetCriterion: loss values against hand-computed cases, normalisation, aux copies, and a
plugged-in class scoring (the focal one)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from detr_lightning.convergence.focal_scoring import FocalScoring
from detr_lightning.detr.mask_losses import mask_losses
from detr_lightning.loss import HungarianMatcher, SetCriterion, base_loss_name


def _criterion(**kwargs):
    return SetCriterion(2, HungarianMatcher(scoring=kwargs.get("scoring")), **kwargs)


def _hand_case(q1_logits=(0.0, 0.0, 3.0)):
    """1 image, 2 queries, 2 classes, 1 target (label 1, cxcywh 0.5 0.5 0.2 0.2)."""
    logits = torch.tensor([[[0.0, 2.0, 0.0], list(q1_logits)]])
    boxes = torch.tensor([[[0.6, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1]]])
    target = {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}
    return {"pred_logits": logits, "pred_boxes": boxes}, [target]


def test_hand_computed_losses():
    outputs, targets = _hand_case()
    losses = _criterion()(outputs, targets)
    # query 0 is matched to the target (class 1); query 1 targets no-object (weight eos 0.1)
    ce0 = -(2.0 - math.log(1 + math.exp(2) + 1))
    ce1 = -(3.0 - math.log(1 + 1 + math.exp(3)))
    assert losses["loss_ce"].item() == pytest.approx((ce0 + 0.1 * ce1) / 1.1, abs=1e-6)
    # pred xyxy (.5,.3,.7,.7), target (.4,.4,.6,.6): inter .02, union .10, hull .12
    assert losses["loss_bbox"].item() == pytest.approx(0.1 + 0.2, abs=1e-6)
    giou = 0.02 / 0.10 - (0.12 - 0.10) / 0.12
    assert losses["loss_giou"].item() == pytest.approx(1 - giou, abs=1e-5)
    assert losses["class_error"].item() == pytest.approx(0.0)
    assert losses["cardinality_error"].item() == pytest.approx(0.0)


def test_class_and_cardinality_errors():
    # query 1 now predicts class 0 too (2 objects for 1 target); the matched query 0 is right
    outputs, targets = _hand_case(q1_logits=(4.0, 0.0, 3.0))
    losses = _criterion()(outputs, targets)
    assert losses["cardinality_error"].item() == pytest.approx(1.0)
    assert losses["class_error"].item() == pytest.approx(0.0)
    outputs["pred_logits"][0, 0] = torch.tensor([0.0, 2.0, 9.0])  # matched query says no-object
    losses = _criterion()(outputs, targets)
    assert losses["class_error"].item() == pytest.approx(100.0)


def test_num_boxes_normalisation_and_clamp():
    outputs, targets = _hand_case()
    crit = _criterion()
    base = crit(outputs, targets)  # None -> 1 box
    four = crit(outputs, targets, num_boxes=4.0)
    assert four["loss_bbox"].item() == pytest.approx(base["loss_bbox"].item() / 4, abs=1e-7)
    assert four["loss_giou"].item() == pytest.approx(base["loss_giou"].item() / 4, abs=1e-7)
    assert four["loss_ce"].item() == pytest.approx(base["loss_ce"].item())  # weighted mean
    tiny = crit(outputs, targets, num_boxes=torch.tensor(0.25))
    assert tiny["loss_bbox"].item() == pytest.approx(base["loss_bbox"].item())


def test_zero_target_images():
    logits = torch.randn(2, 5, 3)
    outputs = {"pred_logits": logits, "pred_boxes": torch.rand(2, 5, 4)}
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    losses = _criterion()(outputs, [empty, empty])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_giou"].item() == 0.0
    # every query targets no-object, so the eos weights cancel in the weighted mean
    expected = -F.log_softmax(logits, -1)[..., -1].mean()
    assert losses["loss_ce"].item() == pytest.approx(expected.item(), abs=1e-6)
    assert losses["class_error"].item() == 100.0
    predicted = (logits.argmax(-1) != 2).sum(1).float()
    assert losses["cardinality_error"].item() == pytest.approx(predicted.mean().item())


def test_mixed_batch_boxes_normalised_by_total_count():
    outputs, targets = _hand_case()
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    batch = {k: torch.cat([v, torch.rand_like(v)]) for k, v in outputs.items()}
    losses = _criterion()(batch, [targets[0], empty])
    assert losses["loss_bbox"].item() == pytest.approx(0.3, abs=1e-6)


def _decoder_outputs(num_layers=6, requires_grad=False):
    gen = torch.Generator().manual_seed(0)
    layers = [
        {
            "pred_logits": torch.randn(2, 6, 3, generator=gen).requires_grad_(requires_grad),
            "pred_boxes": (torch.rand(2, 6, 4, generator=gen) * 0.4 + 0.3).requires_grad_(
                requires_grad
            ),
        }
        for _ in range(num_layers)
    ]
    targets = [
        {"labels": torch.tensor([0, 1, 1]), "boxes": torch.rand(3, 4, generator=gen) * 0.4 + 0.3},
        {"labels": torch.tensor([1]), "boxes": torch.rand(1, 4, generator=gen) * 0.4 + 0.3},
    ]
    return {**layers[-1], "aux_outputs": layers[:-1]}, targets, layers


def test_aux_losses_named_and_equal_to_own_layer():
    outputs, targets, layers = _decoder_outputs()
    crit = _criterion()
    losses = crit(outputs, targets)
    expected_keys = {"loss_ce", "loss_bbox", "loss_giou", "class_error", "cardinality_error"}
    # Every aux layer logs its cardinality_error_<i> too, as the official; class_error only once.
    per_layer = ("loss_ce", "loss_bbox", "loss_giou", "cardinality_error")
    expected_keys |= {f"{k}_{i}" for k in per_layer for i in range(5)}
    assert set(losses) == expected_keys
    for i in range(5):
        alone = crit(layers[i], targets)
        for k in per_layer:
            assert losses[f"{k}_{i}"].item() == pytest.approx(alone[k].item())
    assert crit.weight_of("cardinality_error_3") is None  # logged, never in the total


def test_weighted_total_and_gradients():
    outputs, targets, layers = _decoder_outputs(requires_grad=True)
    crit = _criterion()
    losses = crit(outputs, targets)
    manual = sum(
        w * losses[k + s]
        for k, w in {"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2}.items()
        for s in ["", *(f"_{i}" for i in range(5))]
    )
    total = crit.weighted_total(losses)
    assert total.item() == pytest.approx(manual.item(), rel=1e-6)
    total.backward()
    for layer in layers:
        assert layer["pred_logits"].grad.abs().sum() > 0
        assert layer["pred_boxes"].grad.abs().sum() > 0


def test_loss_ablation_via_weight_dict():
    outputs, targets, _ = _decoder_outputs()
    crit = _criterion(weight_dict={"loss_ce": 1, "loss_giou": 2})
    losses = crit(outputs, targets)
    manual = sum(losses[k] + 2 * losses[k.replace("ce", "giou")] for k in losses if "loss_ce" in k)
    assert crit.weighted_total(losses).item() == pytest.approx(manual.item(), rel=1e-6)
    with pytest.raises(ValueError, match="weight_dict"):
        _criterion(losses=("labels",), weight_dict={"loss_ce": 1, "loss_bbox": 5})
    with pytest.raises(ValueError, match="unknown losses"):
        _criterion(losses=("labels", "segm"))
    # "masks" is a loss group now (loss_mask, loss_dice): it needs pred_masks and target masks.
    masks = _criterion(losses=("labels", "masks"), weight_dict={"loss_ce": 1, "loss_mask": 1})
    with pytest.raises(ValueError, match="pred_masks"):
        masks(outputs, targets)
    only_ce = _criterion(losses=("labels",), weight_dict={"loss_ce": 1})(outputs, targets)
    assert "loss_bbox" not in only_ce and "cardinality_error" not in only_ce


@pytest.mark.parametrize(
    ("key", "base"),
    [
        ("loss_ce", "loss_ce"),
        ("loss_giou", "loss_giou"),
        ("loss_bbox_4", "loss_bbox"),
        ("loss_ce_dn", "loss_ce"),
        ("loss_ce_dn_3", "loss_ce"),
        ("loss_giou_g2", "loss_giou"),
        ("loss_giou_g2_0", "loss_giou"),
        ("class_error", "class_error"),
    ],
)
def test_base_loss_name(key, base):
    assert base_loss_name(key) == base


def test_weighted_total_counts_suffixed_copies():
    crit = _criterion()
    parts = {"loss_ce_dn": 2.0, "loss_bbox_dn_1": 3.0, "loss_giou_g1_0": 0.5, "class_error": 50.0}
    total = crit.weighted_total({k: torch.tensor(v) for k, v in parts.items()})
    assert total.item() == pytest.approx(1 * 2.0 + 5 * 3.0 + 2 * 0.5)


def test_official_style_suffixed_weights_are_accepted():
    crit = SetCriterion(2, HungarianMatcher(), weight_dict={"loss_ce": 1, "loss_ce_0": 3})
    parts = {
        "loss_ce": torch.tensor(2.0),
        "loss_ce_0": torch.tensor(1.0),
        "loss_ce_1": torch.tensor(4.0),
    }
    assert crit.weighted_total(parts).item() == pytest.approx(2.0 + 3 * 1.0 + 4.0)


def test_precomputed_indices_hook():
    # forcing query 1 onto the target (as known-matching denoising would) changes the L1 loss
    outputs, targets = _hand_case()
    crit = _criterion()
    num_boxes = crit.normalise_num_boxes(targets, None, torch.device("cpu"))
    forced = [(torch.tensor([1]), torch.tensor([0]))]
    (losses,) = crit.layer_losses([outputs], targets, [forced], num_boxes, log=False)
    assert losses["loss_bbox"].item() == pytest.approx(0.4 + 0.4 + 0.1 + 0.1, abs=1e-6)
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou"}


def test_focal_loss_equals_torchvision_on_hand_made_one_hot():
    outputs, targets, _ = _decoder_outputs(num_layers=1)
    logits = outputs["pred_logits"][..., :2].clone()  # focal heads have no no-object column
    focal_out = {"pred_logits": logits, "pred_boxes": outputs["pred_boxes"]}
    crit = _criterion(scoring=FocalScoring())
    indices = crit.matcher(focal_out, targets)
    onehot = torch.zeros_like(logits)
    for b, (src, tgt) in enumerate(indices):
        for q, t in zip(src.tolist(), tgt.tolist(), strict=True):
            onehot[b, q, targets[b]["labels"][t]] = 1.0
    expected = sigmoid_focal_loss(logits, onehot, alpha=0.25, gamma=2.0, reduction="sum") / 4
    assert crit(focal_out, targets)["loss_ce"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_focal_loss_single_logit_by_hand():
    target = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    crit = SetCriterion(1, HungarianMatcher(scoring=FocalScoring()), scoring=FocalScoring())
    pos = {
        "pred_logits": torch.zeros(1, 1, 1),
        "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2]]]),
    }
    # p = 0.5, target 1: alpha * (1 - p)^2 * -log(p)
    assert crit(pos, target)["loss_ce"].item() == pytest.approx(0.25 * 0.25 * math.log(2), rel=1e-6)
    # a second, unmatched query with logit 2: (1 - alpha) * p^2 * -log(1 - p)
    two = {
        "pred_logits": torch.tensor([[[0.0], [2.0]]]),
        "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1]]]),
    }
    p = 1 / (1 + math.exp(-2))
    expected = 0.25 * 0.25 * math.log(2) + 0.75 * p**2 * -math.log(1 - p)
    losses = crit(two, target)
    assert losses["loss_ce"].item() == pytest.approx(expected, rel=1e-6)
    # an object is a query with a logit > 0: none of `pos`, one (the logit 2) of `two`
    assert crit(pos, target)["cardinality_error"].item() == pytest.approx(1.0)
    assert losses["cardinality_error"].item() == pytest.approx(0.0)


def test_config_mismatches_are_clear_errors():
    outputs, targets = _hand_case()
    with pytest.raises(ValueError, match="num_classes"):
        SetCriterion(5, HungarianMatcher())(outputs, targets)
    with pytest.raises(ValueError, match="matcher.scoring is SoftmaxScoring"):
        SetCriterion(2, HungarianMatcher(), scoring=FocalScoring())
    with pytest.raises(ValueError, match="eos_coef=0.1 has no effect"):
        SetCriterion(2, HungarianMatcher(scoring=FocalScoring()), 0.1, scoring=FocalScoring())


def test_losses_under_known_matches_never_sync_with_the_host():
    """Past the matcher's one transfer, the criterion's forward and backward over every decoder
    layer have no aten::nonzero or aten::item (device syncs on GPUs)."""
    from torch.profiler import ProfilerActivity, profile

    outputs, targets, layers = _decoder_outputs(requires_grad=True)
    crit = _criterion()
    matches = crit.match(layers, targets)
    num_boxes = crit.normalise_num_boxes(targets, None, torch.device("cpu"))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        per_layer = crit.layer_losses(layers, targets, matches, num_boxes)
        crit.weighted_total({f"{k}_{i}": v for i, d in enumerate(per_layer) for k, v in d.items()})
        total = sum(d["loss_ce"] + d["loss_bbox"] + d["loss_giou"] for d in per_layer)
        total.backward()
    names = {event.name for event in prof.events()}
    assert "aten::cross_entropy_loss" in names  # the profile saw the losses
    assert not {"aten::nonzero", "aten::item", "aten::_local_scalar_dense"} & names


def test_class_error_reads_the_final_layer_not_an_aux_one():
    # final layer's matched query 0 says class 1 (right): 0 %; the aux layer says no-object there
    outputs, targets = _hand_case()
    wrong = outputs["pred_logits"].clone()
    wrong[0, 0] = torch.tensor([0.0, 0.0, 9.0])
    outputs["aux_outputs"] = [{"pred_logits": wrong, "pred_boxes": outputs["pred_boxes"].clone()}]
    losses = _criterion()(outputs, targets)
    assert losses["class_error"].item() == pytest.approx(0.0)


def _two_halves_case():
    """1 image, 2 targets on a 4x4 canvas: target 0 (class 0) the left half, target 1 (class 1)
    the right half. Query 0 predicts target 1's class and box, query 1 target 0's, so the
    matching is crossed; each query's mask logits are +-10 on its matched target's mask."""
    left = torch.zeros(4, 4, dtype=torch.bool)
    left[:, :2] = True
    masks = torch.stack([left, ~left])
    target = {
        "labels": torch.tensor([0, 1]),
        "boxes": torch.tensor([[0.25, 0.5, 0.5, 1.0], [0.75, 0.5, 0.5, 1.0]]),
        "masks": masks,
    }
    logits = torch.tensor([[[0.0, 6.0, 0.0], [6.0, 0.0, 0.0]]])
    boxes = target["boxes"][[1, 0]][None].clone()
    pred_masks = (masks[[1, 0]].float() * 20 - 10)[None]  # [1, 2, 4, 4]
    return {"pred_logits": logits, "pred_boxes": boxes, "pred_masks": pred_masks}, [target]


def test_mask_losses_use_the_targets_in_matched_order():
    outputs, targets = _two_halves_case()
    crit = SetCriterion(
        2, HungarianMatcher(), losses=("labels", "boxes", "masks"),
        weight_dict={"loss_ce": 1, "loss_mask": 1, "loss_dice": 1},
    )  # fmt: skip
    ((src, tgt),) = crit.matcher(outputs, targets)
    assert src.tolist() == [0, 1] and tgt.tolist() == [1, 0]
    losses = crit(outputs, targets)
    # each query reproduces its matched mask: DICE ~ 1 - (16 p + 1) / 17, p = sigmoid(10)
    assert losses["loss_dice"].item() < 1e-3
    direct = mask_losses(
        outputs["pred_masks"], (torch.zeros(2, dtype=torch.long), src), [targets[0]["masks"][tgt]],
        torch.tensor(2.0),
    )  # fmt: skip
    assert losses["loss_dice"].item() == pytest.approx(direct["loss_dice"].item(), rel=1e-6)
    assert losses["loss_mask"].item() == pytest.approx(direct["loss_mask"].item(), rel=1e-6)


def test_logits_wider_than_num_classes_and_partly_masked_batches_are_clear_errors():
    # 3 classes + no-object from the model, num_classes=2 in the criterion: too many columns
    outputs, targets = _hand_case()
    wide = {**outputs, "pred_logits": torch.cat([outputs["pred_logits"]] * 2, -1)[..., :4]}
    with pytest.raises(ValueError, match="num_classes"):
        _criterion()(wide, targets)
    # the masks loss with a batch where only one image has target masks
    outputs, targets = _two_halves_case()
    batch = {k: torch.cat([v, v]) for k, v in outputs.items()}
    unmasked = {k: v for k, v in targets[0].items() if k != "masks"}
    crit = _criterion(losses=("labels", "masks"), weight_dict={"loss_ce": 1, "loss_mask": 1})
    with pytest.raises(ValueError, match="a target has no 'masks'"):
        crit(batch, [targets[0], unmasked])
