"""LitDETR: param groups, lr schedule, crowd handling, num_boxes, non-finite guard, decoder layer."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from lit import NUM_CLASSES, fake_batch, loader, quiet_trainer, tiny_lit
from torch.utils.data import DataLoader

from detr_lightning.checkpointing.pretrained import load_pretrained
from detr_lightning.detr import DETR, Backbone, Transformer, build_position_encoding
from detr_lightning.detr.postprocess import PostProcess
from detr_lightning.lit_module import NonFiniteLossError, drop_crowd
from detr_lightning.schedule import step_schedule
from detr_lightning.utils.lr import lr_scale_factor


def test_drop_crowd_filters_every_per_object_field() -> None:
    t = {
        "labels": torch.tensor([0, 1, 2]),
        "boxes": torch.arange(12.0).view(3, 4),
        "iscrowd": torch.tensor([0, 1, 0]),
        "area": torch.tensor([1.0, 2.0, 3.0]),
        "orig_size": torch.tensor([5, 7]),
        "image_id": torch.tensor(4),
    }
    out = drop_crowd(t)
    assert out["labels"].tolist() == [0, 2]
    assert out["boxes"].tolist() == [[0, 1, 2, 3], [8, 9, 10, 11]]
    assert out["area"].tolist() == [1.0, 3.0]
    assert out["orig_size"].tolist() == [5, 7] and int(out["image_id"]) == 4


def test_param_groups_split_backbone(tmp_path) -> None:
    lit = tiny_lit(lr_backbone=1e-5)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.strategy.connect(lit)
    lit.trainer = trainer
    opt = lit.configure_optimizers()["optimizer"]
    groups = {g["name"]: g for g in opt.param_groups}
    backbone = {id(p) for p in lit.net.backbone.parameters() if p.requires_grad}
    assert {id(p) for p in groups["backbone"]["params"]} == backbone
    assert groups["backbone"]["lr"] == 1e-5 and groups["main"]["lr"] == 1e-3
    trainable = {id(p) for p in lit.parameters() if p.requires_grad}
    assert {id(p) for g in opt.param_groups for p in g["params"]} == trainable
    # stem + layer1 stay frozen (never given to the optimizer)
    assert not any(p.requires_grad for p in lit.net.backbone.body.conv1.parameters())


def test_learned_position_encoding_trains_at_the_backbone_lr(tmp_path) -> None:
    """Table 3's learned_at_attn row: the official code keeps the learned embeddings under
    ``backbone.1`` and so trains them at lr_backbone (1e-5), not at the transformer's lr."""
    lit = tiny_lit(lr_backbone=1e-5)
    lit.net.position_encoding = build_position_encoding("learned", 32)
    trainer = quiet_trainer(tmp_path, max_steps=1)
    trainer.strategy.connect(lit)
    lit.trainer = trainer
    groups = {g["name"]: g for g in lit.configure_optimizers()["optimizer"].param_groups}
    learned = {id(p) for p in lit.net.position_encoding.parameters()}
    assert len(learned) == 2  # row and column embeddings
    assert learned <= {id(p) for p in groups["backbone"]["params"]}
    assert not learned & {id(p) for p in groups["main"]["params"]}
    assert groups["backbone"]["lr"] == 1e-5


def test_zero_backbone_lr_freezes_backbone(tmp_path) -> None:
    lit = tiny_lit(lr_backbone=0.0)
    assert not any(p.requires_grad for p in lit.net.backbone.parameters())
    trainer = quiet_trainer(tmp_path, max_steps=1)
    lit.trainer = trainer
    opt = lit.configure_optimizers()["optimizer"]
    assert [g["name"] for g in opt.param_groups] == ["main"]


def test_lr_multipliers_split_named_parameters_off_their_groups(tmp_path) -> None:
    lit = tiny_lit(
        lr_backbone=1e-5,
        lr_multipliers={"multihead_attn": 0.1, "layer4": 0.5, "decoder.layers.1": 3.0},
        lr_schedule=functools.partial(step_schedule, drop_epochs=1, warmup_steps=2, gamma=0.1),
    )
    trainer = quiet_trainer(tmp_path, max_steps=2, limit_val_batches=0)
    trainer.fit(lit, train_dataloaders=loader(2))
    groups = {g["name"]: g for g in trainer.optimizers[0].param_groups}
    names = {id(p): n for n, p in lit.net.named_parameters()}

    def members(name: str) -> set[str]:
        return {names[id(p)] for p in groups[name]["params"]}

    trainable = {n for n, p in lit.net.named_parameters() if p.requires_grad}
    # The first matching key wins: decoder layer 1's cross-attention is "multihead_attn" (0.1).
    assert members("multihead_attn") == {n for n in trainable if "multihead_attn" in n}
    assert members("backbone.layer4") == {n for n in trainable if "layer4" in n}
    assert members("decoder.layers.1") == {
        n for n in trainable if "decoder.layers.1" in n and "multihead_attn" not in n
    }
    assert not members("main") & (members("multihead_attn") | members("decoder.layers.1"))
    assert {id(p) for g in groups.values() for p in g["params"]} == {
        id(p) for p in lit.parameters() if p.requires_grad
    }
    # Base lrs are the group's x the factor; the schedule (warm-up, then the drop) keeps ratios.
    base = {"main": 1e-3, "backbone": 1e-5, "multihead_attn": 1e-4, "decoder.layers.1": 3e-3,
            "backbone.layer4": 5e-6}  # fmt: skip
    assert {n: g["initial_lr"] for n, g in groups.items()} == pytest.approx(base)
    factor = groups["main"]["lr"] / 1e-3
    assert factor != pytest.approx(1.0)  # the schedule did move the lrs
    assert {n: g["lr"] for n, g in groups.items()} == pytest.approx(
        {n: lr * factor for n, lr in base.items()}
    )


@pytest.mark.parametrize(
    ("multipliers", "message"),
    [({"no_such_layer": 0.1}, r"no parameter's name contains \['no_such_layer'\]"),
     ({"multihead_attn": 0.0}, r"model.lr_multipliers.multihead_attn=0.0: must be a positive"),
     ({"multihead_attn": "x"}, r"model.lr_multipliers.multihead_attn='x'")],
)  # fmt: skip
def test_lr_multipliers_that_would_change_nothing_are_errors(multipliers, message) -> None:
    lit = tiny_lit(lr_backbone=1e-5, lr_multipliers=multipliers)
    lit.trainer = quiet_trainer(Path("."), max_steps=1)
    with pytest.raises(ValueError, match=message):
        lit.configure_optimizers()


def test_a_multiplier_on_frozen_parameters_adds_no_group_and_no_error() -> None:
    """The panoptic recipe's stage 2 freezes the detector, sampling offsets included; here the
    backbone (``lr_backbone=0``) holds every ``layer4`` parameter."""
    lit = tiny_lit(lr_backbone=0.0, lr_multipliers={"layer4": 0.1})
    lit.trainer = quiet_trainer(Path("."), max_steps=1)
    assert any("layer4" in n for n, _ in lit.net.named_parameters())
    groups = lit.configure_optimizers()["optimizer"].param_groups
    assert [g["name"] for g in groups] == ["main"]
    assert {id(p) for p in groups[0]["params"]} == {
        id(p) for p in lit.parameters() if p.requires_grad
    }


def test_lr_scale_factor_rules() -> None:
    assert lr_scale_factor(None, 8) == 1.0
    assert lr_scale_factor("linear", 8) == 8 / 64
    assert lr_scale_factor("sqrt", 16) == pytest.approx(math.sqrt(16 / 64))
    with pytest.raises(ValueError, match="lr_scaling"):
        lr_scale_factor("cubic", 8)


class _LrRecorder(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[tuple[int, int, float, float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        g = {x["name"]: x["lr"] for x in trainer.optimizers[0].param_groups}
        self.lrs.append((trainer.current_epoch, trainer.global_step, g["main"], g["backbone"]))


def test_schedule_drops_at_epoch_boundary_with_warmup(tmp_path) -> None:
    lit = tiny_lit(
        lr_backbone=1e-4,
        lr_schedule=functools.partial(step_schedule, drop_epochs=1, warmup_steps=2, gamma=0.1),
    )
    rec = _LrRecorder()
    trainer = quiet_trainer(tmp_path, max_epochs=2, callbacks=[rec], limit_val_batches=0)
    trainer.fit(lit, train_dataloaders=loader(3))
    factors = [0.5, 1.0, 1.0, 0.1, 0.1, 0.1]  # warm-up over 2 steps; epoch 1 = steps 3..5
    assert [(e, s) for e, s, _, _ in rec.lrs] == [(0, 0), (0, 1), (0, 2), (1, 3), (1, 4), (1, 5)]
    assert [m for _, _, m, _ in rec.lrs] == pytest.approx([1e-3 * f for f in factors])
    assert [b for _, _, _, b in rec.lrs] == pytest.approx([1e-4 * f for f in factors])


def test_linear_lr_scaling_uses_total_batch(tmp_path) -> None:
    lit = tiny_lit(lr_backbone=1e-5, lr_scaling="linear", batch_size=2)
    trainer = quiet_trainer(tmp_path, max_steps=1, accumulate_grad_batches=4)
    lit.trainer = trainer
    groups = {g["name"]: g["lr"] for g in lit.configure_optimizers()["optimizer"].param_groups}
    assert groups == pytest.approx({"main": 1e-3 * 8 / 64, "backbone": 1e-5 * 8 / 64})


def test_non_finite_loss_stops_before_the_optimizer_step(tmp_path) -> None:
    lit = tiny_lit()
    forward = lit.criterion.forward

    def poisoned(outputs, targets, num_boxes=None):
        losses = forward(outputs, targets, num_boxes)
        if lit.global_step == 2:
            losses["loss_bbox_0"] = losses["loss_bbox_0"] * float("nan")
        return losses

    lit.criterion.forward = poisoned
    ckpt = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", save_last=True, every_n_train_steps=1
    )
    trainer = quiet_trainer(
        tmp_path, max_epochs=1, callbacks=[ckpt], limit_val_batches=0, enable_checkpointing=True
    )
    with pytest.raises(NonFiniteLossError, match=r"global step 2 .*loss_bbox_0=nan") as err:
        trainer.fit(lit, train_dataloaders=loader(4))
    assert "last.ckpt" in str(err.value) and "loss_bbox=" not in str(err.value)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == 2
    for name, value in lit.state_dict().items():
        assert torch.isfinite(value.float()).all(), name
        assert torch.equal(value, saved["state_dict"][name]), f"{name} changed after the NaN step"


def test_eval_decoder_layer_selects_aux_output() -> None:
    lit = tiny_lit(layers=3, eval_decoder_layer=1).eval()
    batch = fake_batch(0)
    with torch.no_grad():
        out = lit(batch.pixel_values, batch.pixel_mask)
        sizes = torch.tensor([[64, 64], [64, 64]])
        got = lit.detections(out, sizes)
        want = PostProcess()(out["aux_outputs"][1], sizes)
    assert torch.equal(got[0]["boxes"], want[0]["boxes"])
    lit.hparams.eval_decoder_layer = 5
    with pytest.raises(ValueError, match="3 layers"):
        lit.detections(out, sizes)


def test_predict_step_reports_dataset_category_ids() -> None:
    lit = tiny_lit().eval()
    with torch.no_grad():
        preds = lit.predict_step(fake_batch(1), 0)
    mapping = torch.tensor([10, 20, 30])
    for p in preds:
        assert torch.equal(p["category_id"], mapping[p["labels"]])
    assert int(preds[1]["image_id"]) == 101


def test_crowd_objects_skip_the_loss_but_reach_the_metric(tmp_path) -> None:
    lit = tiny_lit()
    batch = fake_batch(3, batch=2)
    t = batch.targets[1]  # 2 objects; make the second a crowd
    t["iscrowd"] = torch.tensor([0, 1])
    seen = {}
    forward = lit.criterion.forward

    def spy(outputs, targets, num_boxes=None):
        seen["n"] = [len(x["labels"]) for x in targets]
        return forward(outputs, targets, num_boxes)

    lit.criterion.forward = spy
    received = {}
    update = lit.val_map.update

    def spy_update(preds, target):
        received["crowd"] = [x["iscrowd"].tolist() for x in target]
        return update(preds, target)

    lit.val_map.update = spy_update
    trainer = quiet_trainer(tmp_path, limit_val_batches=1)
    trainer.validate(lit, dataloaders=DataLoader([batch], batch_size=None), verbose=False)
    assert seen["n"] == [1, 1]
    assert received["crowd"] == [[0], [0, 1]]


def test_non_finite_gradients_stop_before_the_step(tmp_path) -> None:
    lit = tiny_lit()
    weight = lit.net.class_embed.weight
    weight.register_hook(lambda g: g * float("inf") if lit.global_step == 1 else g)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    with pytest.raises(NonFiniteLossError, match=r"gradients at global step 1 .*finite loss"
                       r", in net\.class_embed\.weight\. "):  # fmt: skip
        trainer.fit(lit, train_dataloaders=loader(3))
    assert all(torch.isfinite(p).all() for p in lit.parameters())


def test_a_gradient_scaler_handles_inf_gradients_itself() -> None:
    """16-mixed (CUDA only under Lightning): an overflowing step is the scaler's to skip, not an
    error; without a scaler the same gradients stop training."""
    from types import SimpleNamespace

    lit = tiny_lit()
    optimizer = torch.optim.AdamW(lit.parameters())
    for p in lit.parameters():
        p.grad = torch.full_like(p, float("inf"))
    scaler = torch.amp.GradScaler("cpu")
    lit._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(scaler=scaler))
    lit.on_before_optimizer_step(optimizer)  # no error
    lit._trainer = SimpleNamespace(precision_plugin=SimpleNamespace(), global_step=3,
                                   current_epoch=0, checkpoint_callbacks=[], ckpt_path=None,
                                   optimizers=[optimizer])  # fmt: skip
    with pytest.raises(NonFiniteLossError, match="gradients at global step 3"):
        lit.on_before_optimizer_step(optimizer)


def test_gradients_too_large_for_their_norm_are_reported_as_such(tmp_path) -> None:
    """Every gradient finite but the total norm past float32's range (a diverging run)."""
    lit = tiny_lit()
    weight = lit.net.class_embed.weight
    weight.register_hook(lambda g: torch.full_like(g, 1e30) if lit.global_step == 1 else g)
    trainer = quiet_trainer(tmp_path, max_epochs=1, limit_val_batches=0)
    with pytest.raises(
        NonFiniteLossError, match=r"total norm overflows; largest \|gradient\| 1e\+30"
    ):
        trainer.fit(lit, train_dataloaders=loader(3))


def _official_file(path, num_classes: int) -> dict:
    """An official-format release file made from a tiny random DETR (keys renamed back)."""
    net = tiny_lit().net if num_classes == NUM_CLASSES else None
    if net is None:
        net = DETR(
            Backbone("resnet18", pretrained=False),
            build_position_encoding("sine", 32),
            Transformer(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=2,
                        dim_feedforward=64, dropout=0.0),
            num_classes=num_classes,
            num_queries=5,
        )  # fmt: skip
    official = {}
    for k, v in net.state_dict().items():
        k = "backbone.0." + k[len("backbone.") :] if k.startswith("backbone.") else k
        k = "backbone.1." + k[len("position_encoding.") :] if k.startswith("position_enc") else k
        official[k] = v.clone()
    torch.save({"model": official}, path)
    return official


def test_pretrained_official_checkpoint_initialises_all_but_the_class_head(tmp_path) -> None:
    official = _official_file(tmp_path / "detr.pth", num_classes=91)
    lit = tiny_lit(pretrained=str(tmp_path / "detr.pth"))
    load_pretrained(lit, lit.hparams.pretrained)  # what utils.build.build_model does, once
    ours = lit.net.state_dict()
    assert torch.equal(ours["backbone.body.layer2.0.conv1.weight"],
                       official["backbone.0.body.layer2.0.conv1.weight"])  # fmt: skip
    for k in ("transformer.decoder.layers.1.linear2.weight", "query_embed.weight",
              "bbox_embed.layers.2.bias", "input_proj.weight"):  # fmt: skip
        assert torch.equal(ours[k], official[k]), k
    assert ours["class_embed.weight"].shape == (NUM_CLASSES + 1, 32)
    assert official["class_embed.weight"].shape == (92, 32)


def test_fit_refuses_images_with_more_objects_than_queries(tmp_path) -> None:
    from coco_files import write_coco

    from detr_lightning.data.datamodule import DetrDataModule
    from detr_lightning.data.errors import DatasetFormatError
    from detr_lightning.data.transforms import make_eval_transforms

    boxes = [{"id": i, "image_id": 1 + i % 2, "category_id": 1, "bbox": [i, i, 8, 8]}
             for i in range(13)]  # fmt: skip
    images, ann = write_coco(tmp_path, [(64, 48), (64, 48)], boxes, [{"id": 1, "name": "a"}])
    dm = DetrDataModule(images, ann, images, ann, num_workers=0,
                        train_transforms=make_eval_transforms(48),
                        val_transforms=make_eval_transforms(48))  # fmt: skip
    lit = tiny_lit(num_queries=6, label_to_category_id=[1])
    trainer = quiet_trainer(tmp_path, max_steps=1)
    with pytest.raises(DatasetFormatError, match=r"image id 1 \(0001\.jpg\) has 7 objects .*6 "
                                                 r"queries.*num_queries=7"):  # fmt: skip
        trainer.fit(lit, datamodule=dm)
    assert trainer.global_step == 0
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(tiny_lit(num_queries=7, label_to_category_id=[1]), datamodule=dm)
    assert trainer.global_step == 1
