"""LitDETR's training: crowd handling, the non-finite loss guard, release weights, query capacity,
the losses logged every step."""

from __future__ import annotations

import csv

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from lit import NUM_CLASSES, fake_batch, loader, quiet_trainer, tiny_lit

from detr_lightning.checkpointing.pretrained import load_pretrained
from detr_lightning.convergence.aspect_loss import AspectRatioLoss
from detr_lightning.detr.criterion import DEFAULT_WEIGHTS
from detr_lightning.lit_module import NonFiniteLossError, drop_crowd
from detr_lightning.loss import HungarianMatcher, SetCriterion


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


def test_crowd_objects_are_targets_only_with_train_on_crowd() -> None:
    """The official panoptic training keeps crowd segments as targets (its CocoPanoptic drops
    none); its detection data drops them. head=panoptic sets train_on_crowd."""
    batch = fake_batch(0, batch=2)
    for t in batch.targets:
        t["iscrowd"][0] = 1
    crowd = sum(int(t["iscrowd"].sum()) for t in batch.targets)
    for keep, expected in ((False, 0), (True, crowd)):
        lit = tiny_lit(train_on_crowd=keep)
        seen = []
        forward = lit.criterion.forward

        def spy(outputs, targets, num_boxes=None, forward=forward, seen=seen):
            seen.append(sum(int(t["iscrowd"].sum()) for t in targets))
            return forward(outputs, targets, num_boxes)

        lit.criterion.forward = spy
        lit._step(batch, "train")
        assert seen == [expected], keep


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


def _official_file(path, num_classes: int) -> dict:
    """An official-format release file made from a tiny random DETR (keys renamed back)."""
    net = tiny_lit(num_classes=num_classes).net
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


def test_a_weight_for_a_loss_set_the_model_does_not_compute_is_refused_at_the_first_step() -> None:
    """``loss_ce_9`` with two decoder layers (aux set _0 only) would be silently ignored: the
    first training step names it, the losses that exist and the removal."""
    from lit import fake_batch

    lit = tiny_lit(layers=2)
    lit.criterion.weight_dict["loss_ce_0"] = 1.0  # an existing aux set: accepted
    lit._step(fake_batch(0), "val")  # validation computes fewer sets: never judged
    lit._step(fake_batch(0), "train")
    lit = tiny_lit(layers=2)
    lit.criterion.weight_dict["loss_ce_9"] = 3.0
    with pytest.raises(ValueError) as info:
        lit._step(fake_batch(0), "train")
    message = str(info.value)
    assert "model.criterion.weight_dict has ['loss_ce_9']" in message
    assert "'loss_ce_0'" in message and "'~model.criterion.weight_dict.loss_ce_9'" in message


def test_every_step_logs_the_last_layers_losses_and_each_extra_terms(tmp_path) -> None:
    """Per step: the paper's losses, class_error and an extra term's key (not only per epoch);
    the aux copies stay per epoch."""
    lit = tiny_lit()
    lit.criterion = SetCriterion(NUM_CLASSES, HungarianMatcher(),
                                 weight_dict={**DEFAULT_WEIGHTS, "loss_aspect": 1.0},
                                 extra_terms={"aspect": AspectRatioLoss()})  # fmt: skip
    trainer = quiet_trainer(tmp_path, max_steps=3, limit_val_batches=0, log_every_n_steps=1,
                            logger=CSVLogger(tmp_path, name="csv"))  # fmt: skip
    trainer.fit(lit, train_dataloaders=loader(3))
    (path,) = tmp_path.rglob("metrics.csv")
    rows = [r for r in csv.DictReader(path.open()) if r.get("train/loss")]
    assert len(rows) == 3
    for key in ("train/loss_ce", "train/loss_bbox", "train/loss_giou", "train/class_error",
                "train/loss_aspect"):  # fmt: skip
        assert all(r[key] for r in rows), key
    assert "train/loss_aspect_0" not in rows[0] and "train_epoch/loss_aspect_0" in rows[0]
