"""Read and validate a COCO panoptic json into flat per-image numpy arrays.

A panoptic json holds ``images`` (id, file_name, width, height), ``categories`` (id, name,
isthing) and one ``annotations`` record per image: ``image_id``, ``file_name`` (the segment-id
PNG) and ``segments_info`` ``[{id, category_id, iscrowd, area, bbox}, ...]``. Everything that
the json alone can contradict is checked here, once, with errors naming the file, the image and
the segment; the PNGs are checked against it when they are read
(:mod:`detr_lightning.data.coco_panoptic`). Flat arrays keep DataLoader workers from touching
(and so copying) a million Python dicts.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detr_lightning.data.coco_records import (
    check_records,
    check_unique_category_names,
    check_unique_file_names,
    check_unique_ids,
    field_found,
)
from detr_lightning.data.errors import DatasetFormatError

MAX_SEGMENT_ID = 256**3 - 1  # three 8-bit channels; 0 is VOID (unlabeled pixels)
_FIX = "Fix: correct or remove that record."


@dataclass
class PanopticIndex:
    """Segments grouped by image: image ``i`` owns rows ``offsets[i]:offsets[i+1]``."""

    file_names: list[str]  # image files, relative to the image folder
    png_names: list[str]  # segment-id PNGs, relative to the PNG folder
    image_ids: np.ndarray  # int64 [N]
    sizes: np.ndarray  # int64 [N, 2] (height, width) from the json
    offsets: np.ndarray  # int64 [N + 1]
    segment_ids: np.ndarray  # int64 [M], in [1, 256**3)
    category_ids: np.ndarray  # int64 [M], the json's
    labels: np.ndarray  # int64 [M] contiguous labels
    iscrowd: np.ndarray  # int64 [M]
    area: np.ndarray  # float64 [M], the json's area; NaN where the json has none
    stats: dict[str, int] = field(default_factory=dict)


def _int_field(
    rec: object, name: str, where: str, default: int | None = None, fix: str = _FIX
) -> int:
    """``rec[name]`` as an int; an absent field (without ``default``) is named as missing."""
    value = rec.get(name, default) if isinstance(rec, dict) else None
    if not isinstance(value, int) or isinstance(value, bool):
        raise DatasetFormatError(f"{where} {field_found(rec, name, value)}; expected int. {fix}")
    return value


def _check_categories(categories: list, ann_file: Path) -> None:
    check_records(categories, "categories", ann_file)
    check_unique_ids((c["id"] for c in categories), "categories", ann_file)
    check_unique_category_names(categories, ann_file)
    fix = ('Fix: "isthing": 1 for a class of countable objects (thing), 0 for an amorphous '
           "region (stuff).")  # fmt: skip
    for i, cat in enumerate(categories):
        where = f"{ann_file}: categories[{i}] (id={cat['id']})"
        if _int_field(cat, "isthing", where, fix=fix) not in (0, 1):
            raise DatasetFormatError(f'{where} has "isthing" = {cat["isthing"]}; expected 0 or 1. '
                                     f"{fix}")  # fmt: skip


def _segment_rows(ann: dict, where: str) -> list[tuple[int, int, int, float]]:
    """(id, category_id, iscrowd, area) of each of one image's segments, validated."""
    segments = ann.get("segments_info")
    if not isinstance(segments, list):
        raise DatasetFormatError(f'{where} has "segments_info" = {segments!r}; expected a list.')
    rows, seen = [], set()
    for j, seg in enumerate(segments):
        at = f"{where}, segments_info[{j}] (id={seg.get('id') if isinstance(seg, dict) else '?'})"
        seg_id = _int_field(seg, "id", at)
        if not 0 < seg_id <= MAX_SEGMENT_ID or seg_id in seen:
            why = "a duplicate id" if seg_id in seen else f"outside [1, {MAX_SEGMENT_ID}]"
            raise DatasetFormatError(f"{at}: segment id {seg_id} is {why} (0 is VOID). {_FIX}")
        seen.add(seg_id)
        crowd = _int_field(seg, "iscrowd", at, default=0)
        if crowd not in (0, 1):
            raise DatasetFormatError(f'{at} has "iscrowd" = {crowd}; expected 0 or 1. {_FIX}')
        area = seg.get("area", float("nan"))
        if not isinstance(area, int | float) or isinstance(area, bool):
            raise DatasetFormatError(f'{at} has "area" = {area!r}; expected a number. {_FIX}')
        rows.append((seg_id, _int_field(seg, "category_id", at), crowd, float(area)))
    return rows


def build_panoptic_index(
    data: dict, ann_file: str | Path, label_to_category_id: list[int], keep_empty: bool
) -> PanopticIndex:
    """Validate ``data`` (a loaded panoptic json) and build a PanopticIndex.

    Raises DatasetFormatError for a malformed record, an image without (or with two) panoptic
    records, a record of an unknown image, a segment whose category is not in ``categories``
    or not in ``label_to_category_id``. Images without segments are dropped unless
    ``keep_empty``.
    """
    ann_file = Path(ann_file)
    check_records(data["images"], "images", ann_file)
    _check_categories(data["categories"], ann_file)
    check_unique_ids((im["id"] for im in data["images"]), "images", ann_file)
    check_unique_file_names(data["images"], ann_file)
    images = {im["id"]: im for im in data["images"]}
    json_cats = {int(c["id"]) for c in data["categories"]}
    lookup = {int(c): i for i, c in enumerate(label_to_category_id)}
    per_image: dict[int, tuple[str, list]] = {}
    for i, ann in enumerate(data["annotations"]):
        where = f"{ann_file}: annotations[{i}]"
        image_id = _int_field(ann, "image_id", where)
        where = f"{where} (image_id {image_id}"
        png = ann.get("file_name")
        if not isinstance(png, str):
            raise DatasetFormatError(f'{where}) has "file_name" = {png!r}; expected the PNG name.')
        where = f"{where}, PNG {png})"
        if image_id not in images or image_id in per_image:
            why = 'is not in "images"' if image_id not in images else "has a second record"
            raise DatasetFormatError(f"{where}: the image {why}. {_FIX}")
        rows = _segment_rows(ann, where)
        for seg_id, cat, _, _ in rows:
            if cat not in json_cats or cat not in lookup:
                why = ('which is not in "categories". Fix: add the category or correct the '
                       "segment." if cat not in json_cats else
                       f"which the label mapping {list(label_to_category_id)} (from the training "
                       "annotations or a checkpoint) lacks. Fix: use the same categories in "
                       "every split.")  # fmt: skip
                raise DatasetFormatError(
                    f"{where}: segment id {seg_id} has category_id {cat}, {why}"
                )
        per_image[image_id] = (png, rows)
    unlabeled = [im for im in images if im not in per_image]
    if unlabeled:
        raise DatasetFormatError(
            f"{ann_file}: image id {unlabeled[0]} (and {len(unlabeled) - 1} more) has no record "
            f'in "annotations". Fix: add its panoptic record (all-VOID: "segments_info": []) or '
            f"remove the image."
        )
    kept = [im for im in images if keep_empty or per_image[im][1]]
    rows = [r for im in kept for r in per_image[im][1]]
    table = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return PanopticIndex(
        file_names=[images[im]["file_name"] for im in kept],
        png_names=[per_image[im][0] for im in kept],
        image_ids=np.array(kept, dtype=np.int64),
        sizes=np.array(
            [[images[im]["height"], images[im]["width"]] for im in kept], dtype=np.int64
        ).reshape(-1, 2),  # fmt: skip
        offsets=np.cumsum([0, *(len(per_image[im][1]) for im in kept)]).astype(np.int64),
        segment_ids=table[:, 0].astype(np.int64),
        category_ids=table[:, 1].astype(np.int64),
        labels=np.array([lookup[int(c)] for c in table[:, 1]], dtype=np.int64),
        iscrowd=table[:, 2].astype(np.int64),
        area=table[:, 3],
        stats={"empty_dropped": len(images) - len(kept)},
    )
