"""Box AP (and, for a panoptic model, PQ) of each category: the tables printed after a test
(``make eval``, training's final test) and ``metrics_per_category.json`` beside ``metrics.json``.

Each category is evaluated by pycocotools on its own (``CocoBoxAP(class_metrics=True)``), so its
AP is COCO's AP @ IoU 0.50:0.95 over all areas, 100 detections, restricted to that category; the
summary AP is the mean over the categories that have ground truth. -1 means undefined (no
ground truth of the category in the evaluated split), as in pycocotools.

A panoptic model's PQ / SQ / RQ per category are panopticapi's ``per_class`` (the summary PQ is
their mean over the categories with ``tp + fp + fn > 0``), with its segment counts; -1 where
the category has no segment in either the predictions or the ground truth (panopticapi writes
0 there but leaves the category out of the mean).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

FILE_NAME = "metrics_per_category.json"
_COLUMNS = 3


def per_category_records(
    per_class: Mapping[int, Mapping[str, float]],
    label_to_category_id: Sequence[int],
    names: Sequence[str],
) -> list[dict[str, Any]]:
    """One record per category of the label map, in label order: ``category_id``, ``name``,
    ``AP``, ``AR_100`` (-1 for a category that occurs in neither the ground truth nor the
    predictions). Unused slots of COCO's id space (no name, never seen) are left out.

    Args:
        per_class: ``CocoBoxAP.per_class``, {label: {"AP": ..., "AR_100": ...}}.
        label_to_category_id: the json's category id of each label (the model's label map).
        names: the category name of each label ("" for an unused slot).
    """
    records = []
    for label, category_id in enumerate(label_to_category_id):
        name = names[label] if label < len(names) else ""
        values = per_class.get(label)
        if values is None and not name:
            continue
        values = values or {"AP": -1.0, "AR_100": -1.0}
        records.append({"category_id": int(category_id), "name": name,
                        "AP": float(values["AP"]), "AR_100": float(values["AR_100"])})  # fmt: skip
    return records


def per_category_pq_records(
    pq_per_class: Mapping[int, Mapping[str, Any]],
    label_to_category_id: Sequence[int],
    names: Sequence[str],
) -> list[dict[str, Any]]:
    """One record per category of ``pq_per_class`` (keyed by the json's category id), in label
    order: ``category_id``, ``name``, ``isthing``, ``PQ``, ``SQ``, ``RQ``, ``tp``, ``fp``, ``fn``.

    Args:
        pq_per_class: ``PanopticEvaluator.per_class``.
        label_to_category_id, names: as :func:`per_category_records`.
    """
    label_of = {int(c): label for label, c in enumerate(label_to_category_id)}
    order = sorted(pq_per_class, key=lambda c: (label_of.get(c, len(label_of)), c))
    records = []
    for cat in order:
        values, label = pq_per_class[cat], label_of.get(cat)
        name = names[label] if label is not None and label < len(names) else ""
        records.append({"category_id": int(cat), "name": name, "isthing": bool(values["isthing"]),
                        **{k: float(values[k]) for k in ("PQ", "SQ", "RQ")},
                        **{k: int(values[k]) for k in ("tp", "fp", "fn")}})  # fmt: skip
    return records


def format_per_category_table(
    records: Sequence[Mapping[str, Any]], title: str, key: str = "AP"
) -> str:
    """``title`` and the categories' ``key`` (AP, PQ) in columns, in label order ("-" for
    undefined)."""
    cells = [(label, "-" if r[key] < 0 else f"{r[key]:.3f}")
             for label, r in zip(category_labels(records), records, strict=True)]  # fmt: skip
    width = max((len(name) for name, _ in cells), default=0)
    rows = [cells[i : i + _COLUMNS] for i in range(0, len(cells), _COLUMNS)]
    lines = [title]
    lines += ["   ".join(f"{name:<{width}} {ap:>5}" for name, ap in row) for row in rows]
    return "\n".join(lines)


def write_per_category_json(
    run_dir: str | os.PathLike,
    records: Sequence[Mapping[str, Any]],
    pq_records: Sequence[Mapping[str, Any]] = (),
) -> str:
    """Write ``run_dir/metrics_per_category.json``: ``{"bbox": [records]}``, with
    ``"panoptic": [pq_records]`` for a panoptic model. Returns the file path."""
    from detr_lightning.checkpointing.atomic_io import atomic_write_text

    content: dict[str, list] = {"bbox": list(records)}
    if pq_records:
        content["panoptic"] = list(pq_records)
    path = os.path.join(os.fspath(run_dir), FILE_NAME)
    atomic_write_text(path, json.dumps(content, indent=2) + "\n")
    return path


def module_records(module: Any, datamodule: Any) -> tuple[list[dict], list[dict]]:
    """The box AP and PQ records (:func:`per_category_records`,
    :func:`per_category_pq_records`) of LitDETR ``module``'s finished test
    (``test_per_class``, ``test_pq_per_class``), named from ``datamodule`` (may be None)."""
    per_class = getattr(module, "test_per_class", None)
    if not per_class:
        return [], []
    names = getattr(datamodule, "category_names", None) or []
    # a module built without a label map takes the data's (as the panoptic evaluator does)
    label_map = (module.hparams.get("label_to_category_id")
                 or getattr(datamodule, "label_to_category_id", None)
                 or range(max(per_class) + 1))  # fmt: skip
    pq_per_class = getattr(module, "test_pq_per_class", None) or {}
    return (per_category_records(per_class, label_map, names),
            per_category_pq_records(pq_per_class, label_map, names))  # fmt: skip


def logged_scalars(records: Sequence[Mapping], pq_records: Sequence[Mapping]) -> dict[str, float]:
    """``test_per_category/AP-<name>`` (and ``PQ-<name>``) of each category, for the loggers
    (wandb puts them in a section of their own); the category id where it has no name, and
    ``<name>-<id>`` where categories share a name (:func:`category_labels`)."""
    values = {}
    for metric, rows in (("AP", records), ("PQ", pq_records)):
        for label, r in zip(category_labels(rows), rows, strict=True):
            values[f"test_per_category/{metric}-{label}"] = r[metric]
    return values


def category_labels(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """How each of ``rows`` (``name``, ``category_id``) is shown: its name; its id where it has
    no name; ``<name>-<id>`` where categories share a name, which alone would not tell them
    apart (a user's json may name two ids alike)."""
    counts = Counter(r["name"] for r in rows)
    return [f"{r['name']}-{r['category_id']}" if counts[r["name"]] > 1 and r["name"]
            else str(r["name"] or r["category_id"]) for r in rows]  # fmt: skip


def report_per_category(module: Any, datamodule: Any, run_dir: str | os.PathLike) -> str | None:
    """Print the tables and write the file of a finished test of LitDETR ``module``
    (``test_per_class``, ``test_pq_per_class``) with ``datamodule``'s category names; the file
    path, or None where the test evaluated no category."""
    records, pq_records = module_records(module, datamodule)
    if not records:
        return None
    print(format_per_category_table(records, "bbox AP per category (-: no ground truth)"))
    if pq_records:
        title = "PQ per category (-: no segment predicted or in the ground truth)"
        print(format_per_category_table(pq_records, title, key="PQ"))
    path = write_per_category_json(run_dir, records, pq_records)
    print(f"per category: {path}")
    return path


SECTIONS = (("bbox", "AP", "Box AP per category"), ("panoptic", "PQ", "PQ per category"))


def per_category_markdown(names: Sequence[str], files: Sequence[Mapping[str, Any]]) -> list[str]:
    """The run comparison's per-category sections (``python -m detr_lightning.report``): for box
    AP, and PQ where a run has it, a row per category (in the order the runs list them), a
    column per run named by ``names``, the best of a row in bold; ``–`` where a run has no
    value, -1 where the category is undefined in that run's split. ``files``: each run's
    ``metrics_per_category.json`` content ({} for none). No section when no run has one."""
    lines: list[str] = []
    for key, metric, title in SECTIONS:
        tables = [{(r["category_id"], r["name"]): r[metric] for r in f.get(key, [])} for f in files]
        categories = list(dict.fromkeys(c for table in tables for c in table))
        if not categories:
            continue
        rows = [{"category_id": cat, "name": name} for cat, name in categories]
        lines += [f"## {title}", "", "| category | " + " | ".join(names) + " |",
                  "|" + "---|" * (len(names) + 1)]  # fmt: skip
        for category, label in zip(categories, category_labels(rows), strict=True):
            values = [table.get(category) for table in tables]
            present = [v for v in values if v is not None]
            best = max(present) if len(set(present)) > 1 else None
            cells = ["–" if v is None else f"**{v:.4f}**" if v == best else f"{v:.4f}"
                     for v in values]  # fmt: skip
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines
