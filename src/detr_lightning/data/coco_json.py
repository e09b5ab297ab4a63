"""Read and validate a COCO instances json into flat per-image numpy arrays.

Boxes go from the json's absolute ``[x, y, w, h]`` to absolute ``[x1, y1, x2, y2]``, are clipped
to the image's ``width``/``height``, and boxes with no area left (w or h <= 0) are dropped and
counted. Flat arrays instead of per-image dicts keep DataLoader workers from touching (and so
copying) millions of Python objects.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detr_lightning.data.errors import DatasetFormatError

REQUIRED_KEYS = ("images", "annotations", "categories")
_OPTIONAL = {"iscrowd": int, "area": int | float}  # annotation fields checked when present
_FIELDS = {
    "images": {"id": int, "file_name": str, "width": int, "height": int},
    "categories": {"id": int, "name": str},
    "annotations": {"id": int, "image_id": int, "category_id": int, "bbox": list},
}


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
    degenerate_ids: list[int] = field(default_factory=list)


def read_coco_json(ann_file: str | Path, kind: str = "instances") -> dict:
    """Load ``ann_file`` and check its top level; raises DatasetFormatError naming file and key.

    ``kind`` ("instances" or "panoptic") only words the error messages."""
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise FileNotFoundError(
            f"Annotation file not found: {ann_file}. Fix: check the data config's annotation "
            f"path, or generate the shapes dataset with `make data`."
        )
    try:
        with open(ann_file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetFormatError(
            f"{ann_file} is not valid JSON ({err}). Fix: re-export or re-download the annotation "
            f"file; a truncated download is the usual cause."
        ) from err
    if not isinstance(data, dict):
        raise DatasetFormatError(
            f"{ann_file} holds a JSON {type(data).__name__}, not a COCO object with keys "
            f"{list(REQUIRED_KEYS)}. Fix: point the config at a COCO {kind} file."
        )
    for key in REQUIRED_KEYS:
        if not isinstance(data.get(key), list):
            problem = "is missing" if key not in data else "is not a list"
            raise DatasetFormatError(
                f'{ann_file}: top-level key "{key}" {problem}. A COCO {kind} file needs '
                f'"images", "annotations" and "categories" lists. Fix: use a COCO {kind} json '
                f'(e.g. {kind}_val2017.json); for a split without labels add "{key}": [].'
            )
    return data


def _check_records(records: list, section: str, ann_file: Path) -> None:
    for i, rec in enumerate(records):
        for name, kind in _FIELDS[section].items():
            value = rec.get(name) if isinstance(rec, dict) else None
            ok = isinstance(value, kind) and not isinstance(value, bool)
            if ok and name == "bbox":
                ok = len(value) == 4 and all(
                    isinstance(v, int | float) and math.isfinite(v) for v in value
                )
            if not ok:
                _field_error(ann_file, section, i, rec, name, value, kind)
        if section == "annotations":
            for name, kind in _OPTIONAL.items():
                value = rec.get(name, 0)
                if not isinstance(value, kind) or isinstance(value, bool):
                    _field_error(ann_file, section, i, rec, name, value, kind)


def _field_error(ann_file, section, i, rec, name, value, kind) -> None:
    rid = rec.get("id", "?") if isinstance(rec, dict) else "?"
    want = (
        "4 finite numbers [x, y, w, h]" if name == "bbox" else getattr(kind, "__name__", "a number")
    )
    raise DatasetFormatError(
        f'{ann_file}: {section}[{i}] (id={rid}) has field "{name}" = {value!r}; expected '
        f"{want}. Fix: correct or remove that record."
    )


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


def build_index(
    data: dict, ann_file: str | Path, label_to_category_id: list[int], train: bool, keep_empty: bool
) -> CocoIndex:
    """Validate records and build a CocoIndex; crowd boxes dropped when ``train``."""
    ann_file = Path(ann_file)
    for section in REQUIRED_KEYS:
        _check_records(data[section], section, ann_file)
    images, anns = data["images"], data["annotations"]
    image_ids = np.array([im["id"] for im in images], dtype=np.int64)
    if len(np.unique(image_ids)) != len(image_ids):
        ordered = np.sort(image_ids)
        dup = int(ordered[np.flatnonzero(np.diff(ordered) == 0)[0]])
        raise DatasetFormatError(
            f'{ann_file}: image id {dup} appears more than once in "images". Fix: give every '
            f"image record a unique id."
        )
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
    boxes = np.clip(raw, 0.0, limits)
    iscrowd = np.array([int(a.get("iscrowd", 0)) for a in anns], dtype=np.int64)
    box_area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    area = np.array([a.get("area", b) for a, b in zip(anns, box_area, strict=True)], np.float32)

    degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    crowd_drop = (iscrowd == 1) & ~degenerate if train else np.zeros_like(degenerate)
    keep = ~degenerate & ~crowd_drop
    stats = {
        "clipped": int(((np.abs(boxes - raw) > 0).any(axis=1) & ~degenerate).sum()),
        "degenerate": int(degenerate.sum()),
        "crowd_dropped": int(crowd_drop.sum()),
    }
    sel = np.flatnonzero(keep)
    sel = sel[np.argsort(img_idx[sel], kind="stable")]
    counts = np.bincount(img_idx[sel], minlength=len(images))
    keep_img = np.ones(len(images), bool) if keep_empty else counts > 0
    stats["empty_dropped"] = int((~keep_img).sum())
    kept = np.flatnonzero(keep_img)  # only images with no rows are dropped: rows stay valid
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
        degenerate_ids=ann_ids[degenerate][:10].tolist(),
    )
