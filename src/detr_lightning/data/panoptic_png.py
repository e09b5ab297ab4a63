"""COCO panoptic PNG encoding: a segment id is stored as the colour R + 256 G + 256^2 B (0 = VOID).

Shared by the dataset reader, the generated shapes data, the panoptic evaluation and the
post-processing that writes predicted PNGs, so that all four agree on one encoding.
"""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, UnidentifiedImageError

from detr_lightning.data.errors import DatasetFormatError, ImageLoadError

_WEIGHTS = np.array([1, 256, 256**2], dtype=np.int64)


def rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, C >= 3] colours (an alpha channel is ignored, as panopticapi does) -> int64
    [H, W] segment ids."""
    return rgb[..., :3].astype(np.int64) @ _WEIGHTS


def ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    """integer [H, W] segment ids in [0, 256^3) -> uint8 [H, W, 3] colours."""
    ids = np.asarray(ids, dtype=np.int64)
    return np.stack([ids % 256, ids // 256 % 256, ids // 256**2 % 256], axis=-1).astype(np.uint8)


def read_segment_ids(path: str | os.PathLike, where: str) -> np.ndarray:
    """Decode an existing panoptic PNG -> int64 [H, W] segment ids (0 = VOID). ``where`` names
    it in errors (path, image id, json). Raises ImageLoadError when it cannot be decoded and
    DatasetFormatError when it holds no RGB encoding (a grey or palette PNG)."""
    try:
        with Image.open(path) as png:
            mode, rgb = png.mode, np.asarray(png)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise ImageLoadError(f"Cannot decode panoptic PNG {where}: {err}.") from err
    if mode not in ("RGB", "RGBA"):  # an L/P/I PNG holds no R + 256 G + 256^2 B encoding
        raise DatasetFormatError(
            f"{where} has mode {mode}; expected RGB-encoded segment ids. Fix: write it as an "
            "RGB PNG with id = R + 256 G + 256^2 B (panopticapi.utils.id2rgb)."
        )
    return rgb_to_ids(rgb)
