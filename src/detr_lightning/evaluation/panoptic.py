"""Panoptic Quality (PQ = SQ * RQ) exactly as COCO's panopticapi ``pq_compute`` defines it.

Per image and category (``match_image``, shared by ``pq_compute`` and the torchmetrics
``PanopticQualityMetric``):

* a prediction and a non-crowd ground-truth segment of the same category match when
  IoU > 0.5, with ``union = pred_area + gt_area - intersection - |pred on VOID|``: the
  prediction's pixels on unlabeled ground truth (id 0) are not held against it. Pixels on a
  crowd region are NOT subtracted from the union (panopticapi does not);
* unmatched non-crowd ground truth is a false negative; crowd ground truth never counts;
* an unmatched prediction is a false positive unless more than half of its pixels lie on
  VOID plus the crowd region of its category;
* per class ``PQ = iou_sum / (tp + fp/2 + fn/2)``, ``SQ = iou_sum / tp``,
  ``RQ = tp / (tp + fp/2 + fn/2)``; the means skip classes with ``tp + fp + fn == 0``.

Segment ids are ints in ``[0, 256**3)``; 0 is VOID. The ground-truth area is the segment's
``area`` from segments_info when given (panopticapi reads it from the json), else its pixel
count; the predicted area is always its pixel count.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from detr_lightning.evaluation.panoptic_io import PanopticImage, load_panoptic_pairs

OFFSET = 256**3  # ids fit in 3 RGB bytes, so gt * OFFSET + pred encodes a (gt, pred) pair
VOID = 0
_FIX = "segments_info and the id map must list the same segment ids"


@dataclass
class ClassStats:
    """Counts of one category: true/false positives, false negatives and the sum of tp IoUs."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou: float = 0.0

    def __iadd__(self, other: ClassStats) -> ClassStats:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn
        self.iou += other.iou
        return self


def _by_id(segments: Sequence[Mapping], categories: Container[int], name: str) -> dict:
    out: dict[int, Mapping] = {}
    for seg in segments:
        seg_id, cat = int(seg["id"]), seg["category_id"]
        if seg_id == VOID or seg_id in out:
            kind = "id 0 (reserved for VOID)" if seg_id == VOID else "a duplicate id"
            raise ValueError(f"{name}: segment id {seg_id} is {kind}; give segments unique ids > 0")
        if cat not in categories:
            raise ValueError(
                f"{name}: segment id {seg_id} has unknown category_id {cat}; use the ids of the "
                "ground-truth json's 'categories'"
            )
        out[seg_id] = seg
    return out


def match_image(
    pred: PanopticImage, gt: PanopticImage, categories: Container[int]
) -> dict[int, ClassStats]:
    """Match one image's segments; returns ``{category_id: ClassStats}`` of that image.

    ``pred`` / ``gt``: :class:`PanopticImage` (``ids`` integer ``[H, W]`` of the same size, any
    device; ``segments_info``). ``categories``: the valid category ids.
    """
    pred_name = pred.get("name", "prediction")
    gt_name = gt.get("name", "ground truth")
    pred_ids, gt_ids = pred["ids"], gt["ids"]
    if pred_ids.ndim != 2 or pred_ids.shape != gt_ids.shape:
        raise ValueError(
            f"{pred_name}: id map of shape {tuple(pred_ids.shape)} does not match the ground "
            f"truth's {tuple(gt_ids.shape)} ({gt_name}); predict at the original image size"
        )
    for ids, name in ((pred_ids, pred_name), (gt_ids, gt_name)):
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= OFFSET):
            raise ValueError(f"{name}: segment ids must lie in [0, 256**3)")
    preds = _by_id(pred["segments_info"], categories, pred_name)
    gts = _by_id(gt["segments_info"], categories, gt_name)
    keys, counts = torch.unique(gt_ids.long() * OFFSET + pred_ids.long(), return_counts=True)
    overlap = {divmod(k, OFFSET): c for k, c in zip(keys.tolist(), counts.tolist(), strict=True)}
    pred_area: dict[int, int] = defaultdict(int)
    gt_area: dict[int, int] = defaultdict(int)
    for (g, p), count in overlap.items():
        pred_area[p] += count
        gt_area[g] += count
    for p in pred_area:
        if p != VOID and p not in preds:
            raise ValueError(f"{pred_name}: segment id {p} is in the id map but not in {_FIX}")
    for p in preds:
        if p not in pred_area:
            raise ValueError(
                f"{pred_name}: segment id {p} is in segments_info, not the id map; {_FIX}"
            )
    for g, seg in gts.items():
        gt_area[g] = int(seg.get("area", gt_area[g]))

    stats: dict[int, ClassStats] = defaultdict(ClassStats)
    gt_matched, pred_matched = set(), set()
    for (g, p), inter in overlap.items():
        gt, pred = gts.get(g), preds.get(p)
        if gt is None or pred is None or gt.get("iscrowd", 0) == 1:
            continue
        if gt["category_id"] != pred["category_id"]:
            continue
        union = pred_area[p] + gt_area[g] - inter - overlap.get((VOID, p), 0)
        iou = inter / union
        # IoU > 0.5 makes the matching unique, so the iteration order cannot change it.
        if iou > 0.5:
            stats[gt["category_id"]] += ClassStats(tp=1, iou=iou)
            gt_matched.add(g)
            pred_matched.add(p)

    crowd: dict[int, int] = {}  # category -> crowd segment id (the last one, as panopticapi)
    for g, gt in gts.items():
        if gt.get("iscrowd", 0) == 1:
            crowd[gt["category_id"]] = g
        elif g not in gt_matched:
            stats[gt["category_id"]].fn += 1
    for p, pred in preds.items():
        if p in pred_matched:
            continue
        ignored = overlap.get((VOID, p), 0)
        if pred["category_id"] in crowd:
            ignored += overlap.get((crowd[pred["category_id"]], p), 0)
        # Mostly on unlabeled or crowd pixels: the ground truth cannot say it is wrong.
        if ignored / pred_area[p] <= 0.5:
            stats[pred["category_id"]].fp += 1
    return dict(stats)


def pq_average(
    stats: Mapping[int, ClassStats], isthing: Mapping[int, bool], things: bool | None = None
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """Mean ``{"pq", "sq", "rq", "n"}`` over the categories of ``isthing`` (only things for
    ``things=True``, only stuff for ``False``), and per-class ``{"pq", "sq", "rq"}``.

    Classes with ``tp + fp + fn == 0`` are left out of the mean (and are 0 per class); with no
    class left the mean is 0.0 with ``n == 0`` (panopticapi divides by zero there)."""
    total = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    per_class: dict[int, dict[str, float]] = {}
    n = 0
    for cat, cat_isthing in isthing.items():
        if things is not None and cat_isthing != things:
            continue
        s = stats.get(cat, ClassStats())
        denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
        if denom == 0:
            per_class[cat] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
            continue
        n += 1
        sq = s.iou / s.tp if s.tp else 0.0
        per_class[cat] = {"pq": s.iou / denom, "sq": sq, "rq": s.tp / denom}
        for key in total:
            total[key] += per_class[cat][key]
    mean = {key: value / n if n else 0.0 for key, value in total.items()}
    return {**mean, "n": n}, per_class


def summarize(stats: Mapping[int, ClassStats], isthing: Mapping[int, bool]) -> dict[str, Any]:
    """panopticapi's result layout: ``All`` / ``Things`` / ``Stuff`` means and ``per_class``."""
    results: dict[str, Any] = {}
    for name, things in (("All", None), ("Things", True), ("Stuff", False)):
        results[name], per_class = pq_average(stats, isthing, things)
        if things is None:
            results["per_class"] = per_class
    return results


PQ_KEYS = ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st")
PQ_GROUPS = (("", "All"), ("_th", "Things"), ("_st", "Stuff"))  # key suffix, summarize's group


def pq_keys(results: Mapping[str, Any]) -> dict[str, float]:
    """:func:`summarize`'s groups as the flat :data:`PQ_KEYS` the metrics log."""
    return {
        key.upper() + suffix: float(results[group][key])
        for suffix, group in PQ_GROUPS
        for key in ("pq", "sq", "rq")
    }


def pq_compute(
    gt_json_file: str | os.PathLike,
    pred_json_file: str | os.PathLike,
    gt_folder: str | os.PathLike | None = None,
    pred_folder: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Drop-in for ``panopticapi.evaluation.pq_compute`` (single process, no printing).

    The folders default to the json path without ``.json`` (panopticapi's convention). Returns
    ``{"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}, "per_class": {category_id: {...}}}``
    with values in [0, 1]."""
    isthing, images = load_panoptic_pairs(gt_json_file, pred_json_file, gt_folder, pred_folder)
    total: dict[int, ClassStats] = defaultdict(ClassStats)
    for pred, gt in images:
        for cat, stats in match_image(pred, gt, isthing).items():
            total[cat] += stats
    return summarize(total, isthing)
