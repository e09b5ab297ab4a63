"""The panoptic head (DETRsegm): shapes per backbone, attention maps, official-file parity."""

import functools

import pytest
import torch
from official_segmentation import official_panoptic_sd, official_segm_forward

from detr_lightning.convergence.compact_trunk import CompactBackbone
from detr_lightning.convergence.denoising import Denoiser
from detr_lightning.convergence.model import ConvergenceDETR
from detr_lightning.convergence.queries import LearnedQueries
from detr_lightning.detr.backbone import Backbone
from detr_lightning.detr.criterion import SetCriterion
from detr_lightning.detr.mask_head import MHAttentionMap
from detr_lightning.detr.matcher import HungarianMatcher
from detr_lightning.detr.model import DETR, build_detr
from detr_lightning.detr.official import load_official_detr, load_pretrained_into
from detr_lightning.detr.position_encoding import build_position_encoding
from detr_lightning.detr.segmentation import DETRsegm
from detr_lightning.detr.set_detector import SetDetector
from detr_lightning.detr.transformer import Transformer

Q, C = 5, 4


def _detr(backbone, d: int = 64, cls=DETR) -> DETR:
    transformer = Transformer(d, 8, 1, 2, dim_feedforward=32, dropout=0.0)
    return cls(backbone, build_position_encoding("sine", d), transformer, C, Q)


def _images(h: int = 60, w: int = 90):
    mask = torch.ones(2, h, w, dtype=torch.bool)
    mask[1, h // 2 :, :] = False
    mask[1, :, w // 3 :] = False
    return torch.randn(2, 3, h, w), mask


@pytest.mark.parametrize(
    ("make_backbone", "size"),
    [
        (lambda: Backbone("resnet18", return_interm_layers=True), (60, 90)),
        (lambda: Backbone("resnet50", return_interm_layers=True), (32, 48)),
        (lambda: CompactBackbone(width=16, return_interm_layers=True), (60, 90)),
    ],
    ids=["resnet18", "resnet50", "compact"],
)
def test_mask_shapes_and_gradients_per_backbone(make_backbone, size) -> None:
    model = DETRsegm(_detr(make_backbone()))
    x, mask = _images(*size)
    out = model(x, mask)
    fine = model.backbone(x, mask)[0][0].shape[-2:]  # the finest level, H/4 x W/4 (rounded up)
    assert tuple(fine) == ((size[0] + 3) // 4, (size[1] + 3) // 4)
    assert out["pred_masks"].shape == (2, Q, *fine)
    assert out["pred_logits"].shape == (2, Q, C + 1) and out["pred_boxes"].shape == (2, Q, 4)
    assert len(out["aux_outputs"]) == 1 and "pred_masks" not in out["aux_outputs"][0]
    out["pred_masks"].sum().backward()
    assert model.mask_head.out_lay.weight.grad is not None
    assert model.bbox_attention.q_linear.weight.grad.abs().sum() > 0


def test_mask_head_layout_follows_the_backbone() -> None:
    resnet = DETRsegm(_detr(Backbone("resnet18", return_interm_layers=True), d=128))
    names = {k for k in resnet.state_dict() if k.startswith("mask_head.")}
    assert {n.split(".")[1] for n in names} == {
        "lay1", "lay2", "lay3", "lay4", "lay5", "gn1", "gn2", "gn3", "gn4", "gn5",
        "adapter1", "adapter2", "adapter3", "out_lay",
    }  # fmt: skip
    assert resnet.mask_head.adapter1.in_channels == 256  # layer3, coarsest first
    assert resnet.mask_head.adapter3.in_channels == 64  # layer1
    assert resnet.mask_head.lay1.in_channels == 128 + 8 and resnet.mask_head.lay5.out_channels == 8
    compact = DETRsegm(_detr(CompactBackbone(width=16, return_interm_layers=True)))
    assert not hasattr(compact.mask_head, "adapter3") and not hasattr(compact.mask_head, "lay5")
    assert compact.mask_head.adapter1.in_channels == 32  # c8
    # Every parameter once, under the official prefixes.
    assert {k.split(".")[0] for k in resnet.state_dict()} == {"detr", "bbox_attention", "mask_head"}


def test_attention_maps_sum_to_one_over_heads_and_pixels_and_skip_padding() -> None:
    attn = MHAttentionMap(32, 32, 4)
    memory = torch.randn(2, 32, 5, 6)
    mask = torch.ones(2, 5, 6, dtype=torch.bool)
    mask[1, 3:, :] = False
    mask[1, :, 4:] = False
    weights = attn(torch.randn(2, 7, 32), memory, mask)
    assert weights.shape == (2, 7, 4, 5, 6)
    torch.testing.assert_close(weights.sum((2, 3, 4)), torch.ones(2, 7))
    assert (weights[1][..., 3:, :] == 0).all() and (weights[1][..., 4:] == 0).all()
    # Not normalised per head: each head's share differs from 1/heads.
    assert not torch.allclose(weights.sum((3, 4)), torch.full((2, 7, 4), 0.25))
    # Padding values do not matter.
    memory2 = memory.clone()
    memory2[1, :, 3:, :] = 100.0
    torch.testing.assert_close(attn(torch.zeros(2, 7, 32), memory, mask)[1],
                               attn(torch.zeros(2, 7, 32), memory2, mask)[1])  # fmt: skip


class _NoHidden(SetDetector):
    def __init__(self, backbone, position_encoding, transformer, num_classes, num_queries):
        super().__init__(backbone, position_encoding, transformer, num_classes, num_classes + 1,
                         num_queries)  # fmt: skip


def test_requirements_are_checked() -> None:
    with pytest.raises(ValueError, match="return_interm_layers"):
        DETRsegm(_detr(Backbone("resnet18")))
    with pytest.raises(TypeError, match="forward_with_hidden"):
        DETRsegm(_detr(Backbone("resnet18", return_interm_layers=True), cls=_NoHidden))


def test_freeze_detr_trains_only_the_mask_head() -> None:
    model = DETRsegm(_detr(Backbone("resnet18", return_interm_layers=True)), freeze_detr=True)
    assert not any(p.requires_grad for p in model.detr.parameters())
    assert all(p.requires_grad for p in model.mask_head.parameters())
    assert all(p.requires_grad for p in model.bbox_attention.parameters())
    # The frozen detector stays in eval mode (BatchNorm statistics, dropout, training queries).
    model.train()
    assert model.training and model.mask_head.training and not model.detr.training
    assert not any(m.training for m in model.detr.modules())
    joint = DETRsegm(_detr(Backbone("resnet18", return_interm_layers=True))).train()
    assert joint.detr.training


def _convergence(groups: int = 2, dn: bool = True, backbone=None) -> ConvergenceDETR:
    """A ConvergenceDETR with two query groups and denoising (default: a frozen-BN trunk, so
    that train and eval modes compute the same features)."""
    transformer = Transformer(32, 4, 1, 2, dim_feedforward=64, dropout=0.0)
    backbone = backbone or Backbone("resnet18", return_interm_layers=True)
    return ConvergenceDETR(
        backbone, build_position_encoding("sine", 32),
        transformer, C, Q, queries=functools.partial(LearnedQueries, groups=groups),
        denoiser=functools.partial(Denoiser, groups=2) if dn else None,
    )  # fmt: skip


def _targets():
    boxes = torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.5, 0.3, 0.4]])
    masks = torch.zeros(2, 60, 90, dtype=torch.bool)
    masks[0, 10:25, 15:35], masks[1, 20:45, 40:70] = True, True
    return [{"labels": torch.tensor([1, 2]), "boxes": boxes, "masks": masks},
            {"labels": torch.tensor([0]), "boxes": boxes[:1], "masks": masks[:1]}]  # fmt: skip


def test_convergence_detr_gets_one_mask_per_matching_query() -> None:
    # The mask head reads the hidden states of the queries behind pred_logits: group 0, without
    # the denoising queries in front nor the extra groups behind.
    model = DETRsegm(_convergence())
    x, mask = _images()
    model.train()
    out = model(x, mask, targets=_targets())
    assert out["pred_masks"].shape == (2, Q, 15, 23)
    assert "group_outputs" in out and "dn_outputs" in out
    model.eval()
    with torch.no_grad():
        ref = model(x, mask)
    # Group 0 never attends to the other groups or the dn queries: same queries, same masks.
    torch.testing.assert_close(out["pred_logits"].detach(), ref["pred_logits"])
    torch.testing.assert_close(out["pred_masks"].detach(), ref["pred_masks"])


def test_convergence_detr_segm_trains_with_the_mask_losses() -> None:
    model = DETRsegm(_convergence(1, False, CompactBackbone(width=16, return_interm_layers=True)))
    weights = {"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2, "loss_mask": 1, "loss_dice": 1}
    criterion = SetCriterion(C, HungarianMatcher(), losses=("labels", "boxes", "masks"),
                             weight_dict=weights)  # fmt: skip
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, mask = _images()
    targets = _targets()
    model.train()
    losses = []
    for _ in range(5):
        loss = criterion(model(x, mask, targets=targets), targets)
        total = criterion.weighted_total(loss)
        opt.zero_grad()
        total.backward()
        assert model.mask_head.out_lay.weight.grad.abs().sum() > 0
        assert model.detr.transformer.decoder.layers[0].linear1.weight.grad is not None
        opt.step()
        losses.append(loss["loss_mask"].item() + loss["loss_dice"].item())
    assert losses[-1] < losses[0]


def _save(tmp_path, sd, name="detr-panoptic-test.pth") -> str:
    path = str(tmp_path / name)
    torch.save({"model": sd}, path)
    return path


def _ours(key: str) -> str:
    return key.replace("detr.backbone.0.", "detr.backbone.", 1).replace(
        "detr.backbone.1.", "detr.position_encoding.", 1
    )


def test_official_panoptic_file_loads_with_parity(tmp_path) -> None:
    sd = official_panoptic_sd()
    model = load_official_detr(_save(tmp_path, sd), masks=True)
    assert isinstance(model, DETRsegm) and not model.training
    loaded = model.state_dict()
    assert len(loaded) == len(sd)
    for key, value in sd.items():
        assert torch.equal(loaded[_ours(key)], value), key
    x, mask = _images(64, 96)
    with torch.no_grad():
        out = model(x, mask)
        logits, boxes, masks = official_segm_forward(sd, x, mask)
    torch.testing.assert_close(out["pred_logits"], logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out["pred_boxes"], boxes, atol=1e-4, rtol=1e-4)
    # A comparison that sees the attention maps: the queries' masks differ (by ~100x the
    # tolerance; a per-head softmax or an unmasked padding moves them by ~4e-2).
    assert masks.shape == (2, Q, 16, 24) and (masks[:, :1] - masks[:, 1:]).abs().max() > 1e-2
    torch.testing.assert_close(out["pred_masks"], masks, atol=1e-4, rtol=1e-4)


def test_panoptic_and_detection_files_cross_load(tmp_path) -> None:
    sd = official_panoptic_sd()
    panoptic = _save(tmp_path, sd)
    detection = _save(
        tmp_path, {k[5:]: v for k, v in sd.items() if k.startswith("detr.")}, "detr-test.pth"
    )
    # A panoptic file loads into a DETRsegm with another label set: only the class head resets.
    kwargs = dict(backbone="resnet18", num_queries=Q, hidden_dim=128, enc_layers=2,
                  dec_layers=2, dim_feedforward=64, return_interm_layers=True)  # fmt: skip
    segm = DETRsegm(build_detr(num_classes=2, **kwargs))
    report = load_pretrained_into(segm, panoptic)
    assert report["reinitialized"] == ["detr.class_embed.bias", "detr.class_embed.weight"]
    assert report["checkpoint_num_classes"] == C and report["model_num_classes"] == 2
    assert torch.equal(segm.mask_head.lay1.weight, sd["mask_head.lay1.weight"])
    # A detection file fills a DETRsegm's detector; the mask head keeps its initialisation.
    fresh = DETRsegm(build_detr(num_classes=C, **kwargs))
    head_before = fresh.mask_head.lay1.weight.clone()
    report = load_pretrained_into(fresh, detection)
    assert report["not_in_checkpoint"] and all(
        k.startswith(("mask_head.", "bbox_attention.")) for k in report["not_in_checkpoint"]
    )
    assert torch.equal(fresh.mask_head.lay1.weight, head_before)
    assert torch.equal(fresh.detr.query_embed.weight, sd["detr.query_embed.weight"])
    # A panoptic file without masks gives its detector.
    detr = load_official_detr(panoptic)
    assert isinstance(detr, DETR) and torch.equal(
        detr.class_embed.bias, sd["detr.class_embed.bias"]
    )
    with pytest.raises(ValueError, match="panoptic"):
        load_official_detr(detection, masks=True)
    with pytest.raises(ValueError, match="nheads=8"):
        load_official_detr(panoptic, masks=True, nheads=4)


def test_matched_only_masks_equal_the_full_head_for_matched_queries() -> None:
    # In training with a matcher, only the matched queries' masks are computed: the same
    # values and the same gradients as the full head, for what the mask losses read.
    torch.manual_seed(0)
    detector = _convergence(1, False, CompactBackbone(width=16, return_interm_layers=True))
    full = DETRsegm(detector).eval()  # eval: both forwards see the same BatchNorm statistics
    matcher = HungarianMatcher()
    matched = DETRsegm(detector, matcher=matcher)
    matched.load_state_dict(full.state_dict())
    matched.train()
    detector.eval()  # same features in both forwards (the head has no train-mode behaviour)
    x, mask = _images()
    targets = _targets()
    out = matched(x, mask, targets=targets)
    ref = full(x, mask)
    indices = matcher(ref, targets)
    rows = (torch.cat([torch.full_like(s, i) for i, (s, _) in enumerate(indices)]),
            torch.cat([s for s, _ in indices]))  # fmt: skip
    torch.testing.assert_close(out["pred_masks"][rows], ref["pred_masks"][rows])
    others = torch.ones(2, Q, dtype=torch.bool)
    others[rows] = False
    assert (out["pred_masks"][others] == 0).all()
    weights = {"loss_ce": 1, "loss_mask": 1, "loss_dice": 1}
    criterion = SetCriterion(C, HungarianMatcher(), losses=("labels", "masks"), weight_dict=weights)
    grads = []
    for model, outputs in ((matched, out), (full, ref)):
        model.zero_grad()
        criterion.weighted_total(criterion(outputs, targets)).backward()
        grads.append(model.mask_head.lay1.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)


def test_scale_attention_makes_a_uniform_map_one_on_real_pixels() -> None:
    model = DETRsegm(_detr(CompactBackbone(width=16, return_interm_layers=True)),
                     scale_attention=True).eval()  # fmt: skip
    for p in model.bbox_attention.q_linear.parameters():
        torch.nn.init.zeros_(p)  # every query attends uniformly
    seen = []
    model.mask_head.register_forward_pre_hook(lambda m, args: seen.append(args[1]))
    x, mask = _images()
    with torch.no_grad():
        model(x, mask)
    attention = seen[0]  # [B, Q, heads, h, w]
    real = model.backbone(x, mask)[-1][1]  # [B, h, w] True on real pixels
    torch.testing.assert_close(
        attention[1][..., real[1]], torch.ones_like(attention[1][..., real[1]])
    )
    assert (attention[1][..., ~real[1]] == 0).all()
