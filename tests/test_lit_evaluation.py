"""LitDETR's evaluation: the evaluated decoder layer, dataset ids in predictions, crowd objects."""

from __future__ import annotations

import pytest
import torch
from lit import fake_batch, quiet_trainer, tiny_lit
from torch.utils.data import DataLoader

from detr_lightning.detr.postprocess import PostProcess


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
