"""The COCO panoptic colour encoding, id = R + 256 G + 256^2 B, against hand-computed colours."""

from __future__ import annotations

import numpy as np

from detr_lightning.data.panoptic_png import ids_to_rgb, rgb_to_ids


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
