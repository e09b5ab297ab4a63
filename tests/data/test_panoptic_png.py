"""The COCO panoptic colour encoding, id = R + 256 G + 256^2 B, against hand-computed colours."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from detr_lightning.data.errors import DatasetFormatError, ImageLoadError
from detr_lightning.data.panoptic_png import ids_to_rgb, read_segment_ids, rgb_to_ids
from detr_lightning.evaluation.panoptic_io import read_id_png


def test_hand_computed_colours_and_round_trip() -> None:
    ids = np.array([[0, 1, 255], [256, 70000, 256**3 - 1]])
    rgb = ids_to_rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 3, 3)
    # 70000 = 112 + 17 * 256 + 1 * 65536
    assert rgb[1, 1].tolist() == [112, 17, 1]
    assert rgb[1, 0].tolist() == [0, 1, 0] and rgb[1, 2].tolist() == [255, 255, 255]
    assert rgb_to_ids(rgb).tolist() == ids.tolist()


def test_alpha_channel_is_ignored() -> None:
    rgba = np.array([[[3, 2, 1, 255], [3, 2, 1, 0]]], dtype=np.uint8)
    assert rgb_to_ids(rgba).tolist() == [[3 + 2 * 256 + 65536] * 2]


def test_read_segment_ids_decodes_rgb_and_names_what_cannot_hold_ids(tmp_path) -> None:
    """The one PNG reader of the dataset and of pq_compute: RGB(A) decodes; a grey PNG (no
    colour encoding) and a broken file are refused naming the file and the fix."""
    ids = np.array([[0, 700], [70000, 5]])
    Image.fromarray(ids_to_rgb(ids)).save(tmp_path / "rgb.png")
    assert read_segment_ids(tmp_path / "rgb.png", "rgb.png").tolist() == ids.tolist()
    Image.fromarray(ids.astype(np.uint8)).save(tmp_path / "grey.png")
    with pytest.raises(DatasetFormatError, match=r"grey\.png .*mode L.*Fix: write it as an RGB"):
        read_segment_ids(tmp_path / "grey.png", "grey.png (image_id 3)")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(ImageLoadError, match=r"Cannot decode panoptic PNG broken\.png"):
        read_segment_ids(tmp_path / "broken.png", "broken.png")
    # pq_compute's reader goes through it
    with pytest.raises(DatasetFormatError, match=r"grey\.png has mode L"):
        read_id_png(tmp_path / "grey.png")
