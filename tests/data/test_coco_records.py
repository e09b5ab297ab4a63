"""The record checks shared by the instances and panoptic readers, on single records."""

from pathlib import Path

import pytest

from detr_lightning.data.coco_records import check_records
from detr_lightning.data.errors import DatasetFormatError

ANN = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 4, 3]}


@pytest.mark.parametrize("bbox", [[1, 2, 3, 4, 5], [1, 2, 3, float("inf")]])
def test_a_bbox_is_exactly_four_finite_numbers(bbox) -> None:
    with pytest.raises(DatasetFormatError, match=r'annotations\[0\] \(id=1\) has field "bbox"'
                       r".*expected 4 finite numbers"):  # fmt: skip
        check_records([{**ANN, "bbox": bbox}], "annotations", Path("a.json"))
