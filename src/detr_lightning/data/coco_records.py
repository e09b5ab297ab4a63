"""Record-level checks shared by the instances and the panoptic json readers.

Each check raises :class:`~detr_lightning.data.errors.DatasetFormatError` naming the file, the
record (section, position and id) and the fix, before anything is trained on the data.
"""

import math
from collections.abc import Hashable, Iterable
from pathlib import Path

from detr_lightning.data.errors import DatasetFormatError

REQUIRED_KEYS = ("images", "annotations", "categories")
_FIELDS = {
    "images": {"id": int, "file_name": str, "width": int, "height": int},
    "categories": {"id": int, "name": str},
    "annotations": {"id": int, "image_id": int, "category_id": int, "bbox": list},
}
_FIX = "Fix: correct or remove that record."
_RECORD = {"images": "image", "categories": "category", "annotations": "annotation"}


def check_records(records: list, section: str, ann_file: Path) -> None:
    """Types of ``section``'s required fields; for annotations also a non-negative bbox size
    and the optional ``iscrowd`` (0 or 1) and ``area`` (a finite number >= 0)."""
    for i, rec in enumerate(records):
        for name, kind in _FIELDS[section].items():
            value = rec.get(name) if isinstance(rec, dict) else None
            ok = isinstance(value, kind) and not isinstance(value, bool)
            if ok and name == "bbox":
                ok = len(value) == 4 and all(_is_number(v) for v in value)
            if not ok:
                _field_error(ann_file, section, i, rec, name, value, kind)
        if section != "annotations":
            continue
        w, h = rec["bbox"][2:]
        if w < 0 or h < 0:
            _record_error(ann_file, section, i, rec,
                          f'has "bbox" = {rec["bbox"]} with a negative width or height; COCO '
                          "boxes are [x, y, width, height] with width, height >= 0 (a box given "
                          "as [x2, y2, x1, y1] or [x, y, -w, -h] reads like this)")  # fmt: skip
        crowd = rec.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, bool) or not isinstance(crowd, int):
            _record_error(ann_file, section, i, rec,
                          f'has "iscrowd" = {crowd!r}; expected 0 or 1')  # fmt: skip
        area = rec.get("area", 0)
        if not _is_number(area) or area < 0:
            _record_error(ann_file, section, i, rec,
                          f'has "area" = {area!r}; expected a number >= 0 (pixels)')  # fmt: skip


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _record_error(ann_file: Path, section: str, i: int, rec: object, problem: str) -> None:
    rid = rec.get("id", "?") if isinstance(rec, dict) else "?"
    raise DatasetFormatError(f"{ann_file}: {section}[{i}] (id={rid}) {problem}. {_FIX}")


def _field_error(
    ann_file: Path, section: str, i: int, rec: object, name: str, value: object, kind: type
) -> None:
    want = (
        "4 finite numbers [x, y, w, h]" if name == "bbox" else getattr(kind, "__name__", "a number")
    )
    _record_error(ann_file, section, i, rec, f"{field_found(rec, name, value)}; expected {want}")


def field_found(rec: object, name: str, value: object) -> str:
    """What a record holds under ``name``, for an error: an absent field reads as missing, not
    as ``= None`` (which a json can hold too)."""
    if not isinstance(rec, dict) or name not in rec:
        return f'has no "{name}" field (missing)'
    return f'has field "{name}" = {value!r}'


def _first_repeat(
    pairs: Iterable[tuple[Hashable, object]],
) -> tuple[Hashable, object, object] | None:
    """(key, the first record's tag, the repeating record's tag) for the first key that repeats
    in ``(key, tag)`` pairs; None when every key is unique."""
    first: dict[Hashable, object] = {}
    for key, tag in pairs:
        if key in first:
            return key, first[key], tag
        first[key] = tag
    return None


def check_unique_ids(ids: Iterable[int], section: str, ann_file: Path) -> None:
    """Ids must be unique within a section: two categories with one id would merge two classes
    under one name, two annotations with one id would make COCO's evaluator count one of them
    twice and drop the other."""
    repeat = _first_repeat((value, i) for i, value in enumerate(ids))
    if repeat is not None:
        value, _, i = repeat
        raise DatasetFormatError(
            f'{ann_file}: {section}[{i}] has id {value}, which an earlier record of "{section}"'
            f" already has. Fix: give every {_RECORD[section]} record a unique id."
        )


def check_unique_category_names(categories: list[dict], ann_file: Path) -> None:
    """Two categories with one name (surrounding spaces ignored) are two classes that the
    predictions, the per-class metrics and the drawings cannot tell apart."""
    repeat = _first_repeat((rec["name"].strip(), rec["id"]) for rec in categories)
    if repeat is not None:
        name, first, second = repeat
        raise DatasetFormatError(
            f'{ann_file}: category ids {first} and {second} are both named "{name}"; '
            f"predictions, per-class metrics and drawings could not tell them apart. Fix: "
            f"rename one of them, or merge them into one category (point the annotations of "
            f"category id {second} at category id {first} and remove it)."
        )


def check_unique_file_names(images: list[dict], ann_file: Path) -> None:
    """Two image records on one file would split that image's objects between them: each
    sample would train on part of its objects, and evaluation would score a perfect detector's
    every box as a false positive on one record or the other."""
    repeat = _first_repeat((rec["file_name"], rec["id"]) for rec in images)
    if repeat is not None:
        name, first, second = repeat
        raise DatasetFormatError(
            f'{ann_file}: image ids {first} and {second} both have "file_name" "{name}"; each '
            f"would get only the annotations that name its own id. Fix: merge the two records "
            f"into one (point the annotations of image id {second} at image id {first} and "
            f"remove the second record)."
        )


def check_annotation_kind(data: dict, ann_file: Path, kind: str) -> None:
    """An instances json given where a panoptic one is expected, or the reverse, is named as
    such (its first annotation tells), rather than failing on a field the other kind lacks."""
    first = next((a for a in data["annotations"] if isinstance(a, dict)), None)
    if first is None:
        return
    if kind == "instances" and "segments_info" in first and "bbox" not in first:
        raise DatasetFormatError(
            f"{ann_file} is a COCO panoptic json (its annotations hold segments_info and a PNG "
            f"file_name), not an instances json. Fix: train the panoptic head on it with "
            f"head=panoptic data=coco_panoptic (or a preset such as r50_panoptic), or point the "
            f"detection data config at an instances json (e.g. instances_train2017.json)."
        )
    if kind == "panoptic" and "segments_info" not in first and "bbox" in first:
        raise DatasetFormatError(
            f"{ann_file} is a COCO instances (detection) json (its annotations hold a bbox, no "
            f"segments_info), not a panoptic json. Fix: point the panoptic data config at a "
            f"panoptic json (e.g. panoptic_train2017.json with its PNG folder), or train a "
            f"detector on this file with head=detection (data=coco or data=custom)."
        )
