"""Read and validate a COCO instances json into flat per-image numpy arrays.

Boxes go from the json's absolute ``[x, y, w, h]`` to absolute ``[x1, y1, x2, y2]``, are clipped
to the image's ``width``/``height``, and boxes with no area left (w or h <= 0) are dropped and
counted. Flat arrays instead of per-image dicts keep DataLoader workers from touching (and so
copying) millions of Python objects.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detr_lightning.data.coco_records import (
    REQUIRED_KEYS,
    check_annotation_kind,
    check_records,
    check_unique_category_names,
    check_unique_file_names,
    check_unique_ids,
)
from detr_lightning.data.errors import DatasetFormatError

SHOWN_IDS = 10  # annotation ids a warning names (then "...")


@dataclass
class CocoIndex:
    """Annotations of one json, grouped by image: image ``i`` owns rows ``offsets[i]:offsets[i+1]``."""

    file_names: list[str]
    image_ids: np.ndarray  # int64 [N]
    sizes: np.ndarray  # int64 [N, 2] (height, width) from the json
    offsets: np.ndarray  # int64 [N + 1]
    boxes: np.ndarray  # float32 [M, 4] absolute xyxy, clipped to the image
    labels: np.ndarray  # int64 [M] contiguous labels
    iscrowd: np.ndarray  # int64 [M]
    area: np.ndarray  # float32 [M] json "area" (clipped box area when absent)
    ann_ids: np.ndarray  # int64 [M]
    stats: dict[str, int] = field(default_factory=dict)
    degenerate_ids: list[int] = field(default_factory=list)  # the first few, for the warning
    clipped_ids: list[int] = field(default_factory=list)  # the first few, for the warning
    # Evaluation splits: the json's own boxes (unclipped xyxy, those without area included),
    # "labels", "iscrowd", "area", and "offsets" per image: what pycocotools scores against.
    ground_truth: dict[str, np.ndarray] | None = None


def read_coco_json(ann_file: str | Path, kind: str = "instances") -> dict:
    """Load ``ann_file`` and check its top level; raises DatasetFormatError naming file and key.

    ``kind``: "instances" or "panoptic", the kind expected (an annotation file of the other
    kind is named as such), or "any" (only the images are read; messages say "instances")."""
    ann_file = Path(ann_file)
    words = "instances" if kind == "any" else kind
    if not ann_file.is_file():
        raise FileNotFoundError(
            f"Annotation file not found: {ann_file}. Fix: check the data config's annotation "
            f"path, or generate the shapes dataset with `make data`."
        )
    try:
        with open(ann_file, encoding="utf-8-sig") as fh:  # a BOM is harmless
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(
            f"{ann_file} is not valid JSON ({err}). Fix: re-export or re-download the annotation "
            f"file; a truncated download is the usual cause."
        ) from err
    if not isinstance(data, dict):
        raise DatasetFormatError(
            f"{ann_file} holds a JSON {type(data).__name__}, not a COCO object with keys "
            f"{list(REQUIRED_KEYS)}. Fix: point the config at a COCO {words} file."
        )
    for key in REQUIRED_KEYS:
        if not isinstance(data.get(key), list):
            problem = "is missing" if key not in data else "is not a list"
            raise DatasetFormatError(
                f'{ann_file}: top-level key "{key}" {problem}. A COCO {words} file needs '
                f'"images", "annotations" and "categories" lists. Fix: use a COCO {words} json '
                f"(e.g. {words}_val2017.json), or {_KEY_FIX[key]}"
            )
    if kind != "any":
        check_annotation_kind(data, ann_file, kind)
    return data


# What each top-level list needs when it is absent: only a split without labels gets by with an
# empty "annotations"; the categories define the classes and must be the training json's.
_KEY_FIX = {
    "images": 'list every image under "images" (id, file_name, width, height).',
    "annotations": 'for a split without labels, add "annotations": [].',
    "categories": 'add the training json\'s "categories" list ([{"id": 1, "name": "..."}, ...]; '
    "the same ids and names in every split).",
}


def _unknown_ref_error(ann_file: Path, ann_ids, bad: np.ndarray, ref: str, values, fix: str):
    first = int(np.flatnonzero(bad)[0])
    more = int(bad.sum()) - 1
    return DatasetFormatError(
        f"{ann_file}: annotation id {int(ann_ids[first])}"
        + (f" (and {more} more)" if more else "")
        + f" refers to {ref} {int(values[first])}, {fix}"
    )


def _labels(data: dict, ann_file: Path, ann_ids, ann_img, image_ids, label_to_category_id):
    """Check every annotation's image and category exist; return int64 [M] labels."""
    ann_cat = np.array([a["category_id"] for a in data["annotations"]], dtype=np.int64)
    bad = ~np.isin(ann_img, image_ids)
    if bad.any():
        raise _unknown_ref_error(ann_file, ann_ids, bad, "image_id", ann_img,
                                 'which is not in "images". Fix: add the image record or remove '
                                 "the annotation.")  # fmt: skip
    json_cats = np.array([c["id"] for c in data["categories"]], dtype=np.int64)
    bad = ~np.isin(ann_cat, json_cats)
    if bad.any():
        raise _unknown_ref_error(ann_file, ann_ids, bad, "category_id", ann_cat,
                                 'which is not in "categories". Fix: add the category or remove '
                                 "the annotation.")  # fmt: skip
    mapping = np.asarray(label_to_category_id, dtype=np.int64)
    bad = ~np.isin(ann_cat, mapping)
    if bad.any():
        raise _unknown_ref_error(ann_file, ann_ids, bad, "category_id", ann_cat,
                                 f"which the label mapping {mapping.tolist()} (taken from the "
                                 "training annotations or a checkpoint) lacks. Fix: use the same "
                                 "categories in every split.")  # fmt: skip
    lookup = {int(c): i for i, c in enumerate(mapping)}
    return np.array([lookup[int(c)] for c in ann_cat], dtype=np.int64)


def _check_pixel_units(raw: np.ndarray, sizes: np.ndarray, ann_file: Path) -> None:
    """Boxes that all fit in [0, 1] on images larger than a pixel are normalised coordinates
    (YOLO-style) in the place of COCO's pixels: clipped and trained on, they would be specks."""
    if len(raw) and raw.max() <= 1.0 and sizes.max() > 1:
        height, width = (int(v) for v in sizes.max(axis=0))
        raise DatasetFormatError(
            f"{ann_file}: all {len(raw)} bboxes lie within [0, 1], on images up to {width}x"
            f"{height} pixels: they look normalised. COCO's bbox is [x, y, width, height] in "
            f"pixels. Fix: multiply x and width by the image's width, y and height by its height."
        )


def _by_image(
    rows: np.ndarray, img_idx: np.ndarray, num_images: int
) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` (annotation positions) ordered by their image, stably, and each image's count."""
    rows = rows[np.argsort(img_idx[rows], kind="stable")]
    return rows, np.bincount(img_idx[rows], minlength=num_images)


def build_index(
    data: dict, ann_file: str | Path, label_to_category_id: list[int], train: bool, keep_empty: bool
) -> CocoIndex:
    """Validate records and build a CocoIndex; crowd boxes dropped when ``train``; the json's
    unaltered ground truth kept beside the model's targets when not ``train``."""
    ann_file = Path(ann_file)
    for section in REQUIRED_KEYS:
        check_records(data[section], section, ann_file)
        check_unique_ids((r["id"] for r in data[section]), section, ann_file)
    check_unique_file_names(data["images"], ann_file)
    check_unique_category_names(data["categories"], ann_file)
    images, anns = data["images"], data["annotations"]
    image_ids = np.array([im["id"] for im in images], dtype=np.int64)
    sizes = np.array([[im["height"], im["width"]] for im in images], dtype=np.int64).reshape(-1, 2)
    ann_ids = np.array([a["id"] for a in anns], dtype=np.int64)
    ann_img = np.array([a["image_id"] for a in anns], dtype=np.int64)
    labels = _labels(data, ann_file, ann_ids, ann_img, image_ids, label_to_category_id)

    order = np.argsort(image_ids, kind="stable")
    img_idx = order[np.searchsorted(image_ids[order], ann_img)] if len(anns) else ann_img
    xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    raw = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    hw = sizes[img_idx].astype(np.float64)
    limits = np.stack([hw[:, 1], hw[:, 0], hw[:, 1], hw[:, 0]], axis=1)
    _check_pixel_units(raw, sizes, ann_file)
    boxes = np.clip(raw, 0.0, limits)
    iscrowd = np.array([int(a.get("iscrowd", 0)) for a in anns], dtype=np.int64)
    box_area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    json_area = np.array([a.get("area", np.nan) for a in anns], np.float64).reshape(-1)
    area = np.where(np.isnan(json_area), box_area, json_area).astype(np.float32)

    degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    crowd_drop = (iscrowd == 1) & ~degenerate if train else np.zeros_like(degenerate)
    keep = ~degenerate & ~crowd_drop
    beyond = np.abs(boxes - raw).max(axis=1, initial=0.0)  # pixels outside the image
    stats = {
        "boxes": len(anns),
        "clipped": int(((beyond > 0) & ~degenerate).sum()),
        "far_outside": int(((beyond > 1) & ~degenerate).sum()),
        "degenerate": int(degenerate.sum()),
        "crowd_dropped": int(crowd_drop.sum()),
    }
    sel, counts = _by_image(np.flatnonzero(keep), img_idx, len(images))
    keep_img = np.ones(len(images), bool) if keep_empty else counts > 0
    stats["empty_dropped"] = int((~keep_img).sum())
    kept = np.flatnonzero(keep_img)  # only images with no rows are dropped: rows stay valid
    ground_truth = None
    if not train:
        rows, gt_counts = _by_image(np.flatnonzero(keep_img[img_idx]), img_idx, len(images))
        raw_area = np.where(np.isnan(json_area), xywh[:, 2] * xywh[:, 3], json_area)
        ground_truth = {
            "offsets": np.concatenate([[0], np.cumsum(gt_counts[kept])]).astype(np.int64),
            "boxes": raw[rows].astype(np.float32),
            "labels": labels[rows],
            "iscrowd": iscrowd[rows],
            "area": raw_area[rows].astype(np.float32),
        }
    return CocoIndex(
        file_names=[images[i]["file_name"] for i in kept],
        image_ids=image_ids[kept],
        sizes=sizes[kept],
        offsets=np.concatenate([[0], np.cumsum(counts[kept])]).astype(np.int64),
        boxes=boxes[sel].astype(np.float32),
        labels=labels[sel],
        iscrowd=iscrowd[sel],
        area=area[sel],
        ann_ids=ann_ids[sel],
        stats=stats,
        degenerate_ids=ann_ids[degenerate][:SHOWN_IDS].tolist(),
        clipped_ids=ann_ids[(beyond > 0) & ~degenerate][:SHOWN_IDS].tolist(),
        ground_truth=ground_truth,
    )
