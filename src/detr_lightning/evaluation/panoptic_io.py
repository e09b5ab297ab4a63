"""Reading COCO panoptic files: the json annotations and the RGB-encoded segment-id PNGs.

A panoptic PNG stores one segment id per pixel as ``id = R + 256 * G + 256**2 * B``; id 0 is
VOID (unlabeled). The json's ``annotations`` hold, per image, ``image_id``, ``file_name`` (the
PNG) and ``segments_info`` ``[{id, category_id, iscrowd, area, bbox}, ...]``; its
``categories`` hold ``{id, isthing, ...}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, Required, TypedDict

import torch
from torch import Tensor

from detr_lightning.data.panoptic_png import read_segment_ids


class PanopticImage(TypedDict, total=False):
    """One image's panoptic segmentation, prediction or ground truth.

    ``ids``: integer ``[H, W]`` tensor of segment ids (0 = VOID), at the original image size.
    ``segments_info``: ``[{"id", "category_id", "iscrowd" (ground truth; 0 if absent),
    "area" (optional, ground truth only: used instead of the pixel count, as panopticapi)}]``.
    ``name``: optional, names the image in error messages (a file path, ``"image_id 7"``).
    """

    ids: Required[Tensor]
    segments_info: Required[list[dict[str, Any]]]
    name: str


def load_panoptic_json(path: str | os.PathLike) -> dict[str, Any]:
    """Load a COCO panoptic json; it must hold an ``annotations`` list."""
    with open(path) as fh:
        data = json.load(fh)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ValueError(
            f"{path}: not a COCO panoptic json (no 'annotations' list); pass the panoptic "
            "json (e.g. panoptic_val2017.json), not the instances json"
        )
    return data


def read_id_png(path: str | os.PathLike) -> Tensor:
    """Decode a panoptic PNG to an int64 ``[H, W]`` tensor of segment ids (0 = VOID)."""
    if not os.path.isfile(path):
        raise ValueError(f"{path}: panoptic PNG not found; check the folder and 'file_name'")
    return torch.from_numpy(read_segment_ids(path, str(path)))


def load_panoptic_pairs(
    gt_json_file: str | os.PathLike,
    pred_json_file: str | os.PathLike,
    gt_folder: str | os.PathLike | None = None,
    pred_folder: str | os.PathLike | None = None,
) -> tuple[dict[int, bool], Iterator[tuple[PanopticImage, PanopticImage]]]:
    """``isthing`` per category of the ground-truth json, and lazily read ``(pred, gt)`` images.

    Folders default to the json path without ``.json`` (panopticapi's convention). Every
    ground-truth image needs a prediction; predictions of other images are ignored."""
    gt_json, pred_json = load_panoptic_json(gt_json_file), load_panoptic_json(pred_json_file)
    gt_folder = str(gt_json_file).replace(".json", "") if gt_folder is None else gt_folder
    pred_folder = str(pred_json_file).replace(".json", "") if pred_folder is None else pred_folder
    for folder in (gt_folder, pred_folder):
        if not os.path.isdir(folder):
            raise ValueError(f"panoptic PNG folder {folder} does not exist; pass gt/pred_folder")
    isthing = {int(cat["id"]): cat["isthing"] == 1 for cat in gt_json["categories"]}
    preds = {ann["image_id"]: ann for ann in pred_json["annotations"]}
    missing = [ann["image_id"] for ann in gt_json["annotations"] if ann["image_id"] not in preds]
    if missing:
        raise ValueError(
            f"{pred_json_file}: no prediction for {len(missing)} ground-truth image(s), e.g. "
            f"image_id {missing[0]}; predict every image of the ground-truth json"
        )

    def read(folder: str | os.PathLike, ann: dict[str, Any]) -> PanopticImage:
        path = os.path.join(folder, ann["file_name"])
        name = f"{path} (image_id {ann['image_id']})"
        return {"ids": read_id_png(path), "segments_info": ann["segments_info"], "name": name}

    pairs = (
        (read(pred_folder, preds[ann["image_id"]]), read(gt_folder, ann))
        for ann in gt_json["annotations"]
    )
    return isthing, pairs
