"""CocoDetectionDataset against pycocotools' reading of the same json, and category mapping."""

import logging

import numpy as np
import pytest
import torch
from coco_files import coco_dict, random_coco, write_coco, write_json
from pycocotools.coco import COCO

from detr_lightning.data.categories import COCO_CATEGORY_NAMES
from detr_lightning.data.coco import CocoDetectionDataset
from detr_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD


def expected_from_pycocotools(ann_file, train: bool, cat_ids):
    """Per image id: (xyxy boxes, labels, iscrowd, area) after the documented conversions."""
    coco = COCO(str(ann_file))
    out = {}
    for img_id in coco.getImgIds():
        info = coco.loadImgs(img_id)[0]
        rows = []
        for a in coco.loadAnns(coco.getAnnIds(imgIds=[img_id], iscrowd=None)):
            x, y, w, h = a["bbox"]
            x1, y1 = min(max(x, 0), info["width"]), min(max(y, 0), info["height"])
            x2, y2 = min(max(x + w, 0), info["width"]), min(max(y + h, 0), info["height"])
            if x2 <= x1 or y2 <= y1 or (train and a["iscrowd"]):
                continue
            rows.append(
                ([x1, y1, x2, y2], cat_ids.index(a["category_id"]), a["iscrowd"], a["area"])
            )
        out[img_id] = rows
    return out


@pytest.mark.parametrize("train", [True, False])
def test_targets_match_pycocotools(tmp_path, train):
    img_dir, ann = random_coco(tmp_path, num_images=15)
    ds = CocoDetectionDataset(img_dir, ann, train=train)
    assert ds.label_to_category_id == [3, 7, 10] and ds.num_classes == 3
    expected = expected_from_pycocotools(ann, train, [3, 7, 10])
    assert sorted(ds.image_ids) == sorted(expected)  # the empty image is kept
    for idx, img_id in enumerate(ds.image_ids):
        rows = expected[img_id]
        raw = ds.raw_target(idx)
        image, target = ds[idx]
        assert len(target["labels"]) == len(rows) == len(raw["boxes"])
        want_boxes = torch.tensor([r[0] for r in rows], dtype=torch.float32).reshape(-1, 4)
        torch.testing.assert_close(raw["boxes"].as_subclass(torch.Tensor), want_boxes)
        assert target["labels"].tolist() == [r[1] for r in rows]
        assert target["iscrowd"].tolist() == [r[2] for r in rows]
        torch.testing.assert_close(target["area"], torch.tensor([r[3] for r in rows]).float())
        # normalised cxcywh back to absolute xyxy on the (untransformed) image
        h, w = target["size"].tolist()
        assert target["orig_size"].tolist() == [h, w] and list(image.shape) == [3, h, w]
        cx, cy, bw, bh = (target["boxes"] * torch.tensor([w, h, w, h])).unbind(-1)
        xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], -1)
        torch.testing.assert_close(xyxy, want_boxes, atol=1e-3, rtol=0)
        assert int(target["image_id"]) == img_id
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64


def test_degenerate_and_clipped_boxes_are_counted_and_logged(tmp_path, caplog):
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},  # fine
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [-10, 5, 30, 10]},  # clipped
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [70, 5, 10, 10]},  # outside
        {"id": 4, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 10]},  # zero width
    ]
    img_dir, ann = write_coco(tmp_path, [(64, 48)], anns)
    with caplog.at_level(logging.WARNING, logger="detr_lightning.data.coco"):
        ds = CocoDetectionDataset(img_dir, ann)
    assert ds.num_degenerate_boxes == 2 and ds.num_clipped_boxes == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "2 boxes with no area inside their image" in warnings[0] and "ids 3, 4;" in warnings[0]
    assert "1 boxes reaching outside" in warnings[0] and str(ann) in warnings[0]
    assert (
        "[x1, y1, x2, y2]" not in warnings[0]
    )  # 1 of 4 reaches out (by 10 px): no format hint (one box)
    raw = ds.raw_target(0)["boxes"].as_subclass(torch.Tensor)
    assert raw.tolist() == [[10, 10, 30, 30], [0, 5, 20, 15]]
    # area missing from the json: the clipped box's area
    assert ds[0][1]["area"].tolist() == [400.0, 200.0]


def test_keep_empty_false_drops_images_without_annotations(tmp_path, caplog):
    anns = [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 1},
            {"id": 2, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5]}]  # fmt: skip
    img_dir, ann = write_coco(tmp_path, [(20, 20)] * 3, anns)
    with caplog.at_level(logging.INFO, logger="detr_lightning.data.coco"):
        assert len(CocoDetectionDataset(img_dir, ann, train=True)) == 3
    # the log says what was dropped, and nothing of keep_empty when no image was dropped
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "dropped 1 crowd annotations (training split)."
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="detr_lightning.data.coco"):
        assert CocoDetectionDataset(img_dir, ann, train=True, keep_empty=False).image_ids == [3]
    assert "dropped 2 images without annotations (keep_empty=False)" in caplog.text
    assert CocoDetectionDataset(img_dir, ann, train=False, keep_empty=False).image_ids == [2, 3]


def test_image_pixels_are_imagenet_normalised(tmp_path):
    img_dir, ann = write_coco(tmp_path, [(16, 8)], [])
    image, target = CocoDetectionDataset(img_dir, ann)[0]
    rgb = (
        image * torch.tensor(IMAGENET_STD)[:, None, None]
        + torch.tensor(IMAGENET_MEAN)[:, None, None]
    )
    # write_image paints (120, 60, 200); JPEG keeps a flat colour within a few levels
    torch.testing.assert_close(
        rgb.mean((1, 2)) * 255, torch.tensor([120.0, 60, 200]), atol=3, rtol=0
    )
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


def _coco_categories():
    return [{"id": i, "name": n} for i, n in COCO_CATEGORY_NAMES.items()]


def test_coco_categories_keep_the_91_slot_id_space(tmp_path):
    anns = [{"id": 1, "image_id": 1, "category_id": 90, "bbox": [1, 1, 5, 5]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [2, 2, 5, 5]}]  # fmt: skip
    img_dir, ann = write_coco(tmp_path, [(20, 20)], anns, _coco_categories())
    ds = CocoDetectionDataset(img_dir, ann)
    assert ds.num_classes == 91 and ds.label_to_category_id == list(range(91))
    assert ds[0][1]["labels"].tolist() == [90, 1]
    forced = CocoDetectionDataset(img_dir, ann, coco_id_space=False)
    assert forced.num_classes == 80 and forced[0][1]["labels"].tolist() == [79, 0]
    assert forced.label_to_category_id == sorted(COCO_CATEGORY_NAMES)


def test_custom_categories_remapped_or_forced_into_coco_space(tmp_path):
    cats = [{"id": 42, "name": "b"}, {"id": 5, "name": "a"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 42, "bbox": [1, 1, 5, 5]}]
    img_dir, ann = write_coco(tmp_path, [(20, 20)], anns, cats)
    ds = CocoDetectionDataset(img_dir, ann)
    assert ds.label_to_category_id == [5, 42] and ds[0][1]["labels"].tolist() == [1]
    coco_space = CocoDetectionDataset(img_dir, ann, coco_id_space=True)
    assert coco_space.num_classes == 91 and coco_space[0][1]["labels"].tolist() == [42]
    # a COCO subset is not auto-detected as COCO: it is remapped
    image = {"id": 1, "file_name": "0001.jpg", "width": 20, "height": 20}
    sub = write_json(tmp_path / "sub.json", coco_dict([image], [], _coco_categories()[:3]))
    assert CocoDetectionDataset(img_dir, sub).num_classes == 3


def test_explicit_mapping_is_used_as_is(tmp_path):
    cats = [{"id": 5, "name": "a"}, {"id": 42, "name": "b"}]
    anns = [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 1, 5, 5]}]
    img_dir, ann = write_coco(tmp_path, [(20, 20)], anns, cats)
    ds = CocoDetectionDataset(img_dir, ann, label_to_category_id=[42, 7, 5])
    assert ds.num_classes == 3 and ds[0][1]["labels"].tolist() == [2]


def test_empty_split_with_no_annotations_keeps_negatives(tmp_path):
    img_dir, ann = write_coco(tmp_path, [(20, 10), (10, 20)], [])
    ds = CocoDetectionDataset(img_dir, ann, train=True)
    assert len(ds) == 2 and all(len(ds[i][1]["labels"]) == 0 for i in range(2))
    assert np.array_equal([ds[i][1]["size"].tolist() for i in range(2)], [[10, 20], [20, 10]])


def test_a_single_far_outside_box_gets_no_format_hint(tmp_path, caplog):
    """coco.py: the [x1, y1, x2, y2] hint needs at least two boxes far outside (one box is
    annotation noise, not a format mix-up), even when it is the file's only box."""
    import logging

    from coco_files import write_coco

    from detr_lightning.data.coco import CocoDetectionDataset

    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [50, 5, 24, 10]}]  # 10 px over
    img_dir, ann = write_coco(tmp_path, [(64, 48)], anns)
    with caplog.at_level(logging.WARNING, logger="detr_lightning.data.coco"):
        CocoDetectionDataset(img_dir, ann)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "1 boxes reaching outside their image (annotation ids 1) are scored as" in warning
    assert "[x1, y1, x2, y2]" not in warning


@pytest.mark.parametrize("train", [True, False])
def test_box_warnings_name_the_ids_and_say_what_the_split_does(tmp_path, caplog, train):
    """12 boxes 10 px over the right edge (ids 1..12) and one zero-width box (id 20). Training
    clips/drops them from its targets; evaluation scores them as the json has them. Both name
    the first 10 clipped ids, then "..."."""
    anns = [{"id": i, "image_id": 1, "category_id": 1, "bbox": [50, 2 + 3 * i, 24, 2]}
            for i in range(1, 13)]  # fmt: skip
    anns.append({"id": 20, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 10]})
    img_dir, ann = write_coco(tmp_path, [(64, 48)], anns)
    with caplog.at_level(logging.WARNING, logger="detr_lightning.data.coco"):
        CocoDetectionDataset(img_dir, ann, train=train)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    ids = "annotation ids 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ..."
    if train:
        assert f"12 boxes reaching outside their image were clipped to it in the training " \
               f"targets ({ids})" in warning  # fmt: skip
        assert "were dropped from the training targets (annotation ids 20;" in warning
        assert "scored" not in warning
    else:
        assert f"12 boxes reaching outside their image ({ids}) are scored as the json has " \
               "them" in warning  # fmt: skip
        assert "1 boxes with no area inside their image (zero width or height, or entirely " \
               "outside it) are scored as the json has them" in warning  # fmt: skip
        assert "(annotation ids 20; fix or remove them)" in warning
        assert "dropped" not in warning and "clipped to it" not in warning
