"""Reading COCO json boxes: annotations follow their image, and the format hint's threshold."""

from __future__ import annotations

import torch


def test_sub_pixel_overhangs_get_no_format_hint(tmp_path, caplog):
    """coco.py: 'A few boxes a few pixels over is annotation noise'; the xyxy-format hint is
    for boxes more than a pixel outside. Four boxes 0.5 px over the right edge: clipped and
    counted, but no hint."""
    import logging

    from coco_files import write_coco

    from detr_lightning.data.coco import CocoDetectionDataset

    anns = [{"id": i, "image_id": 1, "category_id": 1, "bbox": [40.5, 2 + 10 * i, 24.0, 5]}
            for i in range(1, 5)]  # fmt: skip
    img_dir, ann = write_coco(tmp_path, [(64, 48)], anns)
    with caplog.at_level(logging.WARNING, logger="detr_lightning.data.coco"):
        ds = CocoDetectionDataset(img_dir, ann)
    assert ds.num_clipped_boxes == 4
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "4 boxes reaching outside their image (annotation ids 1, 2, 3, 4) are scored" in warning
    assert "[x1, y1, x2, y2]" not in warning


def test_annotations_follow_their_image_when_the_json_lists_ids_unsorted(tmp_path):
    """Images listed with ids 3, 1, 2 (not sorted): each annotation must land on the image
    with its image_id (hand-built, one distinct box per image)."""
    import json

    from coco_files import write_image

    from detr_lightning.data.coco import CocoDetectionDataset

    ids, images, anns = [3, 1, 2], [], []
    for k, image_id in enumerate(ids):
        write_image(tmp_path / "img" / f"{image_id}.jpg", 40, 30)
        images.append({"id": image_id, "file_name": f"{image_id}.jpg", "width": 40, "height": 30})
        anns.append(
            {
                "id": 10 + k,
                "image_id": image_id,
                "category_id": 1,
                "area": 1.0,
                "bbox": [float(image_id), 2.0, 5.0, 5.0],
                "iscrowd": 0,
            }
        )
    (tmp_path / "ann.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]})
    )
    ds = CocoDetectionDataset(tmp_path / "img", tmp_path / "ann.json")
    for idx in range(3):
        image_id = int(ds[idx][1]["image_id"])
        raw = ds.raw_target(idx)["boxes"].as_subclass(torch.Tensor)
        assert raw.tolist() == [[float(image_id), 2.0, image_id + 5.0, 7.0]]


def test_two_image_records_on_one_file_are_refused(tmp_path):
    """Image ids 3 and 77 both on img0.jpg: each record would get only its own id's objects
    (a perfect detector then loses AP). The error names both ids, the file, the json and the fix."""
    import pytest
    from coco_files import coco_dict, write_image, write_json

    from detr_lightning.data.coco import CocoDetectionDataset
    from detr_lightning.data.errors import DatasetFormatError

    write_image(tmp_path / "img" / "img0.jpg", 40, 30)
    images = [{"id": i, "file_name": "img0.jpg", "width": 40, "height": 30} for i in (3, 77)]
    anns = [{"id": 10 + k, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5]}
            for k, i in enumerate((3, 77))]  # fmt: skip
    ann = write_json(tmp_path / "val.json", coco_dict(images, anns))
    with pytest.raises(DatasetFormatError) as err:
        CocoDetectionDataset(tmp_path / "img", ann)
    msg = str(err.value)
    assert str(ann) in msg and "image ids 3 and 77" in msg and '"img0.jpg"' in msg
    assert "Fix: merge the two records" in msg


def test_two_categories_with_one_name_are_refused(tmp_path):
    """Category ids 1 and 2 both named "square" (the second with a trailing space): two
    classes that predictions and drawings cannot tell apart. Refused naming both ids, the name
    and the file."""
    import pytest
    from coco_files import write_coco

    from detr_lightning.data.coco import CocoDetectionDataset
    from detr_lightning.data.errors import DatasetFormatError

    box = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]}
    cats = [{"id": 1, "name": "square"}, {"id": 2, "name": "square "}]
    img_dir, ann = write_coco(tmp_path, [(64, 48)], [box], cats)
    with pytest.raises(DatasetFormatError) as err:
        CocoDetectionDataset(img_dir, ann)
    msg = str(err.value)
    assert msg.startswith(f'{ann}: category ids 1 and 2 are both named "square"')
    assert "Fix: rename one of them" in msg


def test_evaluation_ground_truth_keeps_the_jsons_own_box_and_area():
    """A box overhanging its 40 x 30 image, no "area" in the json: the model's target is
    clipped ([30, 20, 40, 30], area 100), the ground truth pycocotools scores against is the
    json's box as given ([30, 20] + [20, 15] -> [30, 20, 50, 35]) with area w x h = 300."""
    from detr_lightning.data.coco_json import build_index

    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 30}],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [30, 20, 20, 15]}],
            "categories": [{"id": 1, "name": "a"}]}  # fmt: skip
    index = build_index(data, "a.json", [1], train=False, keep_empty=True)
    assert index.boxes.tolist() == [[30, 20, 40, 30]] and index.area.tolist() == [100]
    assert index.ground_truth["boxes"].tolist() == [[30, 20, 50, 35]]
    assert index.ground_truth["area"].tolist() == [300]
