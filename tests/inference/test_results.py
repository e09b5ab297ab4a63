"""COCO results records: pycocotools loads them, with the original category ids and names."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pycocotools.coco import COCO

from detr_lightning.inference.images import ImageRecord
from detr_lightning.inference.results import coco_records, images_json


def test_records_load_with_loadres_and_keep_original_ids(tmp_path) -> None:
    ids, names = [7, 11, 42], ["cat", "dog", ""]
    pred = {
        "boxes": torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 5.0, 5.0]]),
        "scores": torch.tensor([0.9, 0.2]),
        "labels": torch.tensor([1, 2]),
    }
    records = coco_records(pred, image_id=5, category_ids=ids, names=names)
    assert [r["category_id"] for r in records] == [11, 42]
    assert records[0]["bbox"] == [10.0, 20.0, 20.0, 40.0]  # xywh
    assert records[0]["category_name"] == "dog" and "category_name" not in records[1]
    image = ImageRecord(Path("x/a.jpg"), 5, "x/a.jpg")
    gt = images_json([(image, (80, 60))], ids, names, weights="w.ckpt")
    (tmp_path / "images.json").write_text(json.dumps(gt))
    (tmp_path / "predictions.json").write_text(json.dumps(records))
    res = COCO(str(tmp_path / "images.json")).loadRes(str(tmp_path / "predictions.json"))
    assert sorted(a["category_id"] for a in res.anns.values()) == [11, 42]
    assert res.imgs[5]["file_name"] == "x/a.jpg"
    # unnamed labels of a named set are unused slots (COCO's 91-slot space): no category
    assert {c["id"]: c["name"] for c in gt["categories"]} == {7: "cat", 11: "dog"}


def test_scores_keep_every_float32_value_so_low_scores_do_not_tie() -> None:
    """Scores of a barely trained model sit far below 1e-3; the written ones rank as the
    float32 scores the evaluation used (they read back as the same float32)."""
    scores = torch.tensor([3.1e-7, 3.2e-7, 1.23456789e-4, 0.987654321], dtype=torch.float32)
    pred = {
        "boxes": torch.zeros(4, 4),
        "scores": scores,
        "labels": torch.zeros(4, dtype=torch.long),
    }
    written = [r["score"] for r in coco_records(pred, image_id=1, category_ids=[1])]
    assert torch.equal(torch.tensor(written, dtype=torch.float32), scores)
    assert len(set(written)) == 4


def test_without_names_every_id_is_a_category() -> None:
    gt = images_json([], [1, 2, 3])
    assert [c["id"] for c in gt["categories"]] == [1, 2, 3]
