"""The panoptic json's own checks, on hand-built records (the PNGs: test_coco_panoptic.py)."""

import pytest

from detr_lightning.data.coco_panoptic_json import build_panoptic_index
from detr_lightning.data.errors import DatasetFormatError


def _data(segment_ids: list[int]) -> dict:
    segments = [{"id": s, "category_id": 1, "iscrowd": 0, "area": 4} for s in segment_ids]
    return {"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}],
            "annotations": [{"image_id": 1, "file_name": "a.png", "segments_info": segments}],
            "categories": [{"id": 1, "name": "a", "isthing": 1}]}  # fmt: skip


def test_segment_ids_run_from_1_to_the_largest_colour() -> None:
    # 0 is VOID (unlabeled pixels) and 256^3 does not fit three 8-bit channels
    for bad in (0, 256**3):
        with pytest.raises(DatasetFormatError, match=rf"segment id {bad} is outside \[1, "):
            build_panoptic_index(_data([bad]), "p.json", [1], keep_empty=True)
    index = build_panoptic_index(_data([1, 256**3 - 1]), "p.json", [1], keep_empty=True)
    assert index.segment_ids.tolist() == [1, 256**3 - 1]


def test_a_second_panoptic_record_of_one_image_is_refused() -> None:
    # taking either record would silently drop the other's segments
    data = _data([1])
    data["annotations"].append({**data["annotations"][0], "segments_info": []})
    with pytest.raises(DatasetFormatError, match=r"annotations\[1\] \(image_id 1.*second record"):
        build_panoptic_index(data, "p.json", [1], keep_empty=True)
