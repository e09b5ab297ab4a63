"""The reported AP equals pycocotools' COCOeval on the json; DDP duplicates are removed."""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import numpy as np
import pytest
import torch
from cocoeval import fake_detections, pycocotools_stats
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detr_lightning.data.coco import CocoDetectionDataset
from detr_lightning.data.collate import collate
from detr_lightning.data.shapes import generate_shapes_dataset
from detr_lightning.data.transforms import make_eval_transforms
from detr_lightning.evaluation.coco import (
    METRIC_NAMES,
    CocoBoxAP,
    format_ap_table,
    metric_targets,
    select_decoder_layer,
    write_metrics_json,
)


@pytest.fixture(scope="module")
def val_json(tmp_path_factory) -> tuple[str, str]:
    """A 24-image shapes val split whose json gets two crowd annotations."""
    root = generate_shapes_dataset(tmp_path_factory.mktemp("shapes") / "d", train=1, val=24)
    ann = root / "annotations" / "instances_val.json"
    data = json.loads(ann.read_text())
    for a in data["annotations"][3:5]:
        a["iscrowd"] = 1
    ann.write_text(json.dumps(data))
    return str(root / "val"), str(ann)


def our_stats(
    folder: str, ann: str, dets: list[dict], backend: str, batch: int = 5, class_metrics=False
) -> Any:
    """The summary (and, with ``class_metrics``, ``per_class`` too) of ``dets``."""
    ds = CocoDetectionDataset(folder, ann, make_eval_transforms(96, 200), train=False)
    to_label = {c: i for i, c in enumerate(ds.label_to_category_id)}
    metric = CocoBoxAP(backend=backend, class_metrics=class_metrics)
    for start in range(0, len(ds), batch):
        b = collate([ds[i] for i in range(start, min(start + batch, len(ds)))])
        preds = []
        for t in b.targets:
            mine = [d for d in dets if d["image_id"] == int(t["image_id"])]
            xywh = torch.tensor([d["bbox"] for d in mine], dtype=torch.float32).view(-1, 4)
            preds.append({
                "boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1),
                "scores": torch.tensor([d["score"] for d in mine], dtype=torch.float32),
                "labels": torch.tensor([to_label[d["category_id"]] for d in mine]),
            })  # fmt: skip
        metric.update(preds, metric_targets(b.targets))
    summary = {k: float(v) for k, v in metric.compute().items()}
    return (summary, metric.per_class) if class_metrics else summary


def _cocoeval_of_category(ann: str, dets: list[dict], category_id: int) -> np.ndarray:
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(ann)
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.params.catIds = [category_id]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_each_categorys_ap_equals_cocoeval_restricted_to_it(val_json, backend) -> None:
    folder, ann = val_json
    with contextlib.redirect_stdout(io.StringIO()):
        dets = fake_detections(COCO(ann))
    summary, per_class = our_stats(folder, ann, dets, backend, class_metrics=True)
    category_ids = CocoDetectionDataset(folder, ann, None, train=False).label_to_category_id
    assert sorted(per_class) == list(range(len(category_ids)))
    for label, category_id in enumerate(category_ids):
        ref = _cocoeval_of_category(ann, dets, category_id)
        assert per_class[label]["AP"] == pytest.approx(ref[0], abs=1e-6), category_id
        assert per_class[label]["AR_100"] == pytest.approx(ref[8], abs=1e-6), category_id
    aps = [v["AP"] for v in per_class.values()]
    assert len(set(aps)) > 1  # the categories differ: a label mix-up would show
    # every category has ground truth here: COCO's AP is the mean of the categories' APs
    assert np.mean(aps) == pytest.approx(summary["AP"], abs=1e-6)


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_reported_ap_equals_cocoeval_on_the_json(val_json, backend) -> None:
    folder, ann = val_json
    with contextlib.redirect_stdout(io.StringIO()):
        dets = fake_detections(COCO(ann))
    ref = pycocotools_stats(ann, dets)
    ours = our_stats(folder, ann, dets, backend)
    assert 0.2 < ref[0] < 0.95  # a non-trivial case: neither perfect nor empty
    assert min(ref[3:6]) > 0, "small, medium and large objects all present"
    assert [ours[k] for k in METRIC_NAMES.values()] == pytest.approx(list(ref), abs=1e-6)


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_boxes_the_model_cannot_train_on_are_scored_as_the_json_has_them(
    val_json, tmp_path, backend
) -> None:
    """The model's targets clip a box reaching outside its image and drop one without area; the
    metric still scores the json's own boxes, as pycocotools does (it scored the altered ones,
    and reported a higher AP)."""
    folder, ann = val_json
    data = json.loads(open(ann).read())
    outside, flat = data["annotations"][0], data["annotations"][7]
    outside["bbox"] = [outside["bbox"][0] - 30, *outside["bbox"][1:3], outside["bbox"][3] + 400]
    flat["bbox"][2] = 0
    altered = tmp_path / "altered.json"
    altered.write_text(json.dumps(data))
    with contextlib.redirect_stdout(io.StringIO()):
        dets = fake_detections(COCO(str(altered)), seed=2)
    ds = CocoDetectionDataset(folder, str(altered), make_eval_transforms(96, 200), train=False)
    assert (ds.num_clipped_boxes, ds.num_degenerate_boxes) == (1, 1)
    ours = our_stats(folder, str(altered), dets, backend)
    assert [ours[k] for k in METRIC_NAMES.values()] == pytest.approx(
        list(pycocotools_stats(str(altered), dets)), abs=1e-6
    )


def test_crowd_and_area_matter(val_json) -> None:
    """Dropping iscrowd/area (as a naive metric would) changes the numbers: they are used."""
    folder, ann = val_json
    with contextlib.redirect_stdout(io.StringIO()):
        dets = fake_detections(COCO(ann), seed=1)
    ours = our_stats(folder, ann, dets, "faster_coco_eval")
    data = json.loads(open(ann).read())
    for a in data["annotations"]:
        a["iscrowd"], a["area"] = 0, a["bbox"][2] * a["bbox"][3]
    naive = folder.replace("val", "naive.json")
    with open(naive, "w") as f:
        json.dump(data, f)
    ref_naive = pycocotools_stats(naive, dets)
    assert any(abs(ours[k] - ref_naive[i]) > 1e-4 for i, k in enumerate(METRIC_NAMES.values()))


def _image(image_id: int, shift: float) -> tuple[dict, dict]:
    box = torch.tensor([[10.0, 10.0, 50.0, 60.0]])
    pred = {"boxes": box + shift, "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    target = {"boxes": box, "labels": torch.tensor([1]), "image_id": torch.tensor(image_id)}
    return pred, target


def test_duplicate_images_are_counted_once() -> None:
    """DistributedSampler padding repeats images; the metric must evaluate each image once."""
    images = [_image(i, s) for i, s in enumerate([0.0, 12.0, 25.0])]
    once, twice = CocoBoxAP(), CocoBoxAP()
    for p, t in images:
        once.update([p], [t])
    # rank-interleaved order with image 0 and 1 repeated (the padding), as after a gather
    for p, t in [images[2], images[0], images[1], images[0], images[1]]:
        twice.update([p], [t])
    a, b = once.compute(), twice.compute()
    assert all(float(a[k]) == float(b[k]) for k in a)
    naive = CocoBoxAP()
    for p, t in [images[2], images[0], images[1], images[0], images[1]]:
        naive.update([p], [{**t, "image_id": torch.tensor(len(naive.image_ids))}])
    assert float(naive.compute()["AP"]) != float(a["AP"])


def test_table_and_metrics_json(tmp_path) -> None:
    metrics = {k: i / 20 for i, k in enumerate(METRIC_NAMES.values())}
    table = format_ap_table(metrics)
    assert "maxDets=100 ] = 0.000   AP\n" in table and "area= small" in table
    path = write_metrics_json(tmp_path, metrics, checkpoint="x.ckpt")
    saved = json.loads(open(path).read())
    assert {k: saved[k] for k in metrics} == metrics and saved["run"] == {"checkpoint": "x.ckpt"}


def test_decoder_layers_are_counted_from_zero_and_the_last_is_the_final_output() -> None:
    outputs = {"i": 2, "aux_outputs": [{"i": 0}, {"i": 1}]}
    assert [select_decoder_layer(outputs, k)["i"] for k in (0, 1, 2, None)] == [0, 1, 2, 2]


def test_metric_targets_without_gt_boxes_go_back_to_original_pixels() -> None:
    # by hand: cxcywh (.5, .25, .2, .5) -> xyxy (.4, 0, .6, .5), times (w, h) = (200, 100)
    t = {
        "boxes": torch.tensor([[0.5, 0.25, 0.2, 0.5]]),
        "labels": torch.tensor([3]),
        "image_id": torch.tensor(7),
        "orig_size": torch.tensor([100, 200]),  # (h, w)
        "area": torch.tensor([123.0]),
    }
    (out,) = metric_targets([t])
    torch.testing.assert_close(out["boxes"], torch.tensor([[80.0, 0.0, 120.0, 50.0]]))
    assert out["labels"].tolist() == [3] and int(out["image_id"]) == 7
    assert out["iscrowd"].tolist() == [0]
    assert out["area"].tolist() == [123.0]  # the dataset's area, not the box's w * h
    (no_area,) = metric_targets([{k: v for k, v in t.items() if k != "area"}])
    assert "area" not in no_area


def test_recall_thresholds_are_pycocotools_float64_ones() -> None:
    # pycocotools' recThrs = np.linspace(0, 1, 101) in float64 (not a float32 linspace)
    metric = CocoBoxAP()
    assert metric.rec_thresholds == np.linspace(0.0, 1.0, 101).tolist()
    assert metric.iou_thresholds == np.linspace(0.5, 0.95, 10).tolist()


def test_metric_targets_keep_the_targets_crowd_flags() -> None:
    # a crowd box must reach the metric as crowd: pycocotools ignores it (neither a miss nor,
    # for a detection on it, a false positive), so a model that finds only the non-crowd box
    # scores AP 1; scored as a normal box, it would be a miss
    boxes = torch.tensor([[0.25, 0.25, 0.3, 0.3], [0.75, 0.75, 0.3, 0.3]])  # cxcywh
    t = {"boxes": boxes, "labels": torch.tensor([0, 0]), "image_id": torch.tensor(1),
         "orig_size": torch.tensor([100, 100]), "iscrowd": torch.tensor([0, 1])}  # fmt: skip
    (out,) = metric_targets([t])
    assert out["iscrowd"].tolist() == [0, 1]
    metric = CocoBoxAP()
    pred = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0]]), "scores": torch.tensor([0.9]),
            "labels": torch.tensor([0])}  # fmt: skip
    metric.update([pred], [out])
    assert float(metric.compute()["AP"]) == pytest.approx(1.0)
