"""COCO results records (``predictions.json``) and the image list they refer to (``images.json``).

``predictions.json`` is what pycocotools' ``COCO.loadRes`` reads: ``[{"image_id",
"category_id" (the dataset's original id), "bbox" [x, y, w, h] in original-image pixels,
"score"}]`` plus ``"category_name"`` when the checkpoint knows the class names (an extra key
that pycocotools carries along). ``images.json`` is a COCO file without annotations (``images``
with ids, file names and sizes; ``categories``) so that ``COCO("images.json").loadRes(
"predictions.json")`` works for a folder of images that has no annotation file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from detr_lightning.inference.images import ImageRecord


def label_name(label: int, category_ids: Sequence[int], names: Sequence[str] | None) -> str:
    """The class name of a contiguous label, else its category id as text."""
    if names and 0 <= label < len(names) and names[label]:
        return names[label]
    return str(category_ids[label]) if 0 <= label < len(category_ids) else str(label)


def coco_records(
    pred: dict[str, Tensor],
    image_id: int,
    category_ids: Sequence[int],
    names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """One image's detections -> COCO results records.

    Args:
        pred: "boxes" [K, 4] absolute xyxy in original pixels, "scores" [K], "labels" [K]
            contiguous labels (``category_ids[label]`` is the dataset's id).
        image_id: the image's id.
        category_ids: label -> original category id.
        names: label -> class name ("" where unknown), or None.
    """
    xyxy = pred["boxes"].float().cpu()
    xywh = xyxy.clone()
    xywh[:, 2:] -= xyxy[:, :2]
    records = []
    for box, label, score in zip(xywh.tolist(), pred["labels"].tolist(),
                                 pred["scores"].tolist(), strict=True):  # fmt: skip
        # 9 significant digits give a float32 score back exactly: AP from this file ranks the
        # detections as the evaluation did (a fixed 1e-6 rounding tied low scores).
        record = {"image_id": int(image_id), "category_id": int(category_ids[label]),
                  "bbox": [round(v, 3) for v in box], "score": float(f"{score:.9g}")}  # fmt: skip
        if names and names[label]:
            record["category_name"] = names[label]
        records.append(record)
    return records


def images_json(
    images: Sequence[tuple[ImageRecord, tuple[int, int]]],
    category_ids: Sequence[int],
    names: Sequence[str] | None = None,
    **info: Any,
) -> dict[str, Any]:
    """A COCO dataset without annotations for the predicted images.

    Args:
        images: (record, (height, width) of the decoded file) per predicted image.
        category_ids: label -> category id; every distinct id becomes a category.
        names: label -> name, or None (the id is the name then).
        info: extra entries of the ``info`` block (checkpoint, input, ...).
    """
    categories: dict[int, str] = {}
    for label, cid in enumerate(category_ids):
        name = names[label] if names and label < len(names) else ""
        if names and not name:
            continue  # an unused slot of COCO's 91-slot id space
        categories[int(cid)] = name or str(cid)
    return {
        "info": {"description": "images predicted by detr_lightning.predict", **info},
        "images": [
            {"id": rec.image_id, "file_name": rec.file_name, "height": h, "width": w}
            for rec, (h, w) in images
        ],
        "annotations": [],
        "categories": [{"id": i, "name": n} for i, n in sorted(categories.items())],
    }
