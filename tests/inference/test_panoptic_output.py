"""predict's panoptic output: what it writes is COCO panoptic format that panopticapi's
pq_compute reads, and scores what the validation's PanopticEvaluator scores on the same
outputs."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from detr_lightning.data.categories import coco_categories
from detr_lightning.data.coco_panoptic import CocoPanopticDataset
from detr_lightning.data.collate import collate
from detr_lightning.data.panoptic_png import rgb_to_ids
from detr_lightning.data.shapes import generate_shapes_dataset
from detr_lightning.detr.panoptic_postprocess import PostProcessPanoptic
from detr_lightning.evaluation import pq_compute
from detr_lightning.evaluation.panoptic_evaluator import PanopticEvaluator
from detr_lightning.inference.panoptic_output import PanopticWriter, thing_map

SETTINGS = functools.partial(PostProcessPanoptic, threshold=0.85, min_area=5)


@pytest.fixture(scope="module")
def val(tmp_path_factory) -> CocoPanopticDataset:
    root = generate_shapes_dataset(tmp_path_factory.mktemp("d") / "shapes", train=1, val=4)
    # no resize: the model's size is the original size, so perfect masks stay perfect
    return CocoPanopticDataset(root / "val", root / "annotations" / "panoptic_val.json")


def outputs_from_truth(ds: CocoPanopticDataset, index: int) -> tuple[dict, object]:
    """A query per non-crowd segment (its class sure, its mask +-8), the first one missed on odd
    images, plus one unsure query (p = 0.6, under the threshold) that would cover everything."""
    batch = collate([ds[index]])
    target = batch.targets[0]
    gt = ds.ground_truth(int(target["image_id"]))
    label = {c: i for i, c in enumerate(ds.label_to_category_id)}
    segments = [s for s in gt["segments_info"] if not s["iscrowd"]][index % 2 :]
    q = len(segments) + 1
    logits = torch.full((q, ds.num_classes + 1), -10.0)
    logits[:, -1] = 10.0
    masks = torch.full((q, *gt["ids"].shape), -8.0)
    for k, seg in enumerate(segments):
        masks[k][gt["ids"] == seg["id"]] = 8.0
        logits[k, -1], logits[k, label[seg["category_id"]]] = -10.0, 10.0
    logits[-1, -1], logits[-1, 0] = 0.0, 0.4  # p(label 0) ~ 0.6: not kept
    masks[-1] = 20.0
    return {"pred_logits": logits[None], "pred_masks": masks[None]}, batch


def test_written_files_score_with_pq_compute_as_the_evaluator_scores(val, tmp_path) -> None:
    things = thing_map(ds_ids := list(val.label_to_category_id), val.categories)
    writer = PanopticWriter(tmp_path / "panoptic", SETTINGS(is_thing_map=things), ds_ids)
    evaluator = PanopticEvaluator(SETTINGS)
    for i in range(len(val)):
        outputs, batch = outputs_from_truth(val, i)
        target = batch.targets[0]
        size = tuple(target["size"].tolist())
        writer.add(outputs, [size], [tuple(target["orig_size"].tolist())],
                   batch.pixel_values.shape[-2:], [int(target["image_id"])],
                   [f"sub/{int(target['image_id'])}.png"])  # fmt: skip
        evaluator.update(outputs, batch.pixel_values, batch.targets, val)
    pred_json = writer.write_json(tmp_path / "panoptic.json")

    written = json.loads(pred_json.read_text())
    assert [a["file_name"] for a in written["annotations"]] == [
        f"sub/{i}.png" for i in val._index.image_ids.tolist()
    ]
    for ann in written["annotations"]:  # the PNG holds exactly the listed ids, with their areas
        ids = rgb_to_ids(np.asarray(Image.open(tmp_path / "panoptic" / ann["file_name"])))
        values, counts = np.unique(ids[ids > 0], return_counts=True)
        found = dict(zip(values.tolist(), counts.tolist(), strict=True))
        assert found == {s["id"]: s["area"] for s in ann["segments_info"]}
        assert {s["category_id"] for s in ann["segments_info"]} <= {c["id"] for c in val.categories}
    assert {c["id"]: c["isthing"] for c in written["categories"]} == {
        c["id"]: c["isthing"] for c in val.categories
    }

    ours = evaluator.compute()
    scored = pq_compute(val.ann_file, pred_json, val.png_folder, tmp_path / "panoptic")
    assert 0 < scored["All"]["pq"] < 1  # the missed segments cost something
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for key in ("pq", "sq", "rq"):
            assert scored[group][key] == pytest.approx(ours[key.upper() + suffix], abs=1e-9)


def test_a_coco_panoptic_release_knows_its_133_categories() -> None:
    """250 labels = COCO ids; only COCO panoptic's 80 things and 53 stuff can form segments."""
    things = thing_map(list(range(250)), coco_categories(panoptic=True))
    assert len(things) == 133 and sum(things.values()) == 80
    assert things[18] and not things[187] and 12 not in things and 0 not in things
    assert max(things) == 200


def test_thing_map_follows_the_categories_or_the_official_coco_rule() -> None:
    categories = [{"id": 3, "isthing": 1}, {"id": 7, "isthing": 0}]
    # label 2's category 99 is not in the data: no segment can have it
    assert thing_map([3, 7, 99], categories) == {0: True, 1: False}
    # a bare COCO panoptic release: ids up to 90 are things (official hubconf)
    assert thing_map([0, 90, 91, 199], None) == {0: True, 1: True, 2: False, 3: False}


def test_an_exported_models_settings_yield_to_the_runs_with_a_warning(caplog) -> None:
    from omegaconf import OmegaConf

    from detr_lightning.inference.panoptic_output import exported_panoptic_settings

    recorded = {"_target_": "x.PostProcessPanoptic", "_partial_": True, "threshold": 0.5,
                "min_area": 5}  # fmt: skip
    assert exported_panoptic_settings(None, recorded, "m.onnx") == recorded
    assert exported_panoptic_settings(None, None, "m.onnx") is None
    same = OmegaConf.create(recorded)
    assert exported_panoptic_settings(same, recorded, "m.onnx") is same and not caplog.records
    run = OmegaConf.create({**recorded, "threshold": 0.85})
    assert exported_panoptic_settings(run, recorded, "m.onnx") is run
    (record,) = caplog.records
    assert record.levelname == "WARNING" and record.getMessage().startswith(
        "m.onnx records model.panoptic.postprocess {threshold: 0.5} (its export's); this run uses "
        "{threshold: 0.85}")  # fmt: skip
