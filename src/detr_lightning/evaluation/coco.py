"""COCO box evaluation: a DDP-safe torchmetrics wrapper, the AP table and ``metrics.json``.

Metric names (the keys of ``metrics.json`` and of the logged ``val/*``, ``test/*`` values), all
from pycocotools' 12 summary numbers:

    AP      AP @ IoU 0.50:0.95, all areas, 100 detections    (COCO "bbox AP")
    AP50    AP @ IoU 0.50
    AP75    AP @ IoU 0.75
    AP_S    AP for small objects  (area < 32^2 pixels of the ORIGINAL image)
    AP_M    AP for medium objects (32^2 <= area < 96^2)
    AP_L    AP for large objects  (area >= 96^2)
    AR_1    average recall with at most 1 detection per image
    AR_10   average recall with at most 10 detections per image
    AR_100  average recall with at most 100 detections per image
    AR_S, AR_M, AR_L   AR_100 per area range

A value of -1 means "undefined" (e.g. no ground truth of that size), as in pycocotools.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_convert

from detr_lightning.evaluation.image_gather import GatherImageLists

# torchmetrics key -> our key, in pycocotools' summary order.
METRIC_NAMES: dict[str, str] = {
    "map": "AP",
    "map_50": "AP50",
    "map_75": "AP75",
    "map_small": "AP_S",
    "map_medium": "AP_M",
    "map_large": "AP_L",
    "mar_1": "AR_1",
    "mar_10": "AR_10",
    "mar_100": "AR_100",
    "mar_small": "AR_S",
    "mar_medium": "AR_M",
    "mar_large": "AR_L",
}
_TABLE_ROWS = [
    ("AP", "Average Precision", "0.50:0.95", "all", 100),
    ("AP50", "Average Precision", "0.50", "all", 100),
    ("AP75", "Average Precision", "0.75", "all", 100),
    ("AP_S", "Average Precision", "0.50:0.95", "small", 100),
    ("AP_M", "Average Precision", "0.50:0.95", "medium", 100),
    ("AP_L", "Average Precision", "0.50:0.95", "large", 100),
    ("AR_1", "Average Recall", "0.50:0.95", "all", 1),
    ("AR_10", "Average Recall", "0.50:0.95", "all", 10),
    ("AR_100", "Average Recall", "0.50:0.95", "all", 100),
    ("AR_S", "Average Recall", "0.50:0.95", "small", 100),
    ("AR_M", "Average Recall", "0.50:0.95", "medium", 100),
    ("AR_L", "Average Recall", "0.50:0.95", "large", 100),
]
# Per-image states of MeanAveragePrecision that must be reordered together.
_IMAGE_STATES = (
    "detection_box",
    "detection_mask",
    "detection_scores",
    "detection_labels",
    "groundtruth_box",
    "groundtruth_mask",
    "groundtruth_labels",
    "groundtruth_crowds",
    "groundtruth_area",
)


class CocoBoxAP(GatherImageLists, MeanAveragePrecision):
    """``MeanAveragePrecision`` (xyxy boxes) that also records each image's id.

    Under DDP the ranks may evaluate different numbers of images
    (:mod:`~detr_lightning.evaluation.image_gather` gathers them), and a sampler that evens out
    the ranks repeats a few; gathered naively, those images would be evaluated twice. After the
    cross-process gather, ``compute`` keeps the first copy of every ``image_id`` and orders
    images by id, so a DDP evaluation equals the single-process one (pycocotools also orders
    images by id, which decides the order of equal-score detections).

    ``iou_type="segm"`` evaluates instance masks instead (COCO "segm AP"): predictions and
    targets then carry ``masks`` [K, H, W] bool at the original image size (boxes unused).

    ``class_metrics=True`` also evaluates each class on its own (pycocotools restricted to one
    category: one more evaluation over all the images); ``compute`` then leaves them in
    ``per_class``: {label: {"AP": ..., "AR_100": ...}} for every label that occurs in the
    predictions or the ground truth (-1: no ground truth of that label, as in pycocotools).
    """

    def __init__(
        self, backend: str = "faster_coco_eval", iou_type: str = "bbox", **kwargs: Any
    ) -> None:
        # pycocotools' exact float64 thresholds: torchmetrics' defaults come from a float32
        # linspace, and a recall equal to e.g. 0.1 then falls on the other side of 0.1000000015,
        # which moves AP by ~1e-3 (found by the test against COCOeval).
        kwargs.setdefault("iou_thresholds", np.linspace(0.5, 0.95, 10).tolist())
        kwargs.setdefault("rec_thresholds", np.linspace(0.0, 1.0, 101).tolist())
        super().__init__(box_format="xyxy", iou_type=iou_type, backend=backend, **kwargs)
        self.add_state("image_ids", default=[], dist_reduce_fx=None)
        self.per_class: dict[int, dict[str, float]] = {}

    def update(  # type: ignore[override]
        self, preds: list[dict[str, Tensor]], target: list[dict[str, Tensor]]
    ) -> None:
        """Add one batch.

        Args:
            preds: per image "boxes" [K, 4] absolute xyxy, "scores" [K], "labels" [K] int64.
            target: per image "boxes" [T, 4] absolute xyxy, "labels" [T] int64, "image_id"
                (int64 scalar), optional "iscrowd" [T] and "area" [T] (original-image pixels).
        """
        super().update(preds, target)
        for t in target:
            self.image_ids.append(torch.as_tensor(t["image_id"], device=self.device).reshape(1))

    def compute(self) -> dict[str, Tensor]:
        """Renamed COCO summary (see the module docstring) over the unique images seen."""
        if self.image_ids:
            ids = torch.cat(self.image_ids).cpu().tolist()
            first: dict[int, int] = {}
            for pos, image_id in enumerate(ids):
                first.setdefault(int(image_id), pos)
            order = [first[i] for i in sorted(first)]
            for name in _IMAGE_STATES:
                state = getattr(self, name)
                if len(state) == len(ids):
                    setattr(self, name, [state[i] for i in order])
        raw = super().compute()
        if self.class_metrics:
            labels = raw["classes"].reshape(-1).tolist()
            ap, ar = raw["map_per_class"].reshape(-1), raw["mar_100_per_class"].reshape(-1)
            self.per_class = {int(label): {"AP": float(ap[i]), "AR_100": float(ar[i])}
                              for i, label in enumerate(labels)}  # fmt: skip
        return {ours: raw[theirs].float() for theirs, ours in METRIC_NAMES.items()}


def metric_targets(targets: Sequence[Mapping[str, Tensor]]) -> list[dict[str, Tensor]]:
    """Targets in the metric's format: boxes back in original-image pixels, or, where a target
    carries it, its ``gt_*`` ground truth as the json has it (what pycocotools scores against:
    the model's ``boxes`` are clipped to the image and have area).

    Args:
        targets: per image "boxes" [T, 4] normalised cxcywh (relative to the transformed image,
            which evaluation transforms only resize), "labels" [T], "orig_size" [2] (h, w),
            "image_id", optional "iscrowd" [T] and "area" [T]; optional "gt_boxes" [G, 4]
            absolute xyxy, "gt_labels", "gt_iscrowd", "gt_area" [G].
    Returns:
        per image "boxes" [T, 4] absolute xyxy in the original image, "labels", "image_id",
        "iscrowd" (zeros when absent) and "area" (only when given; else torchmetrics uses w*h).
    """
    out = []
    for t in targets:
        if "gt_boxes" in t:  # the json's own ground truth (evaluation splits of COCO datasets)
            out.append({"boxes": t["gt_boxes"], "labels": t["gt_labels"], "image_id": t["image_id"],
                        "iscrowd": t["gt_iscrowd"], "area": t["gt_area"]})  # fmt: skip
            continue
        h, w = t["orig_size"].to(t["boxes"].dtype).unbind()
        boxes = box_convert(t["boxes"], "cxcywh", "xyxy") * torch.stack([w, h, w, h])
        item = {
            "boxes": boxes,
            "labels": t["labels"],
            "image_id": t["image_id"],
            "iscrowd": t.get("iscrowd", torch.zeros_like(t["labels"])),
        }
        if "area" in t:
            item["area"] = t["area"]
        out.append(item)
    return out


def format_ap_table(metrics: Mapping[str, float], title: str = "COCO bbox evaluation") -> str:
    """pycocotools-style summary lines for the metric keys present in ``metrics``."""
    lines = [title]
    for key, kind, iou, area, dets in _TABLE_ROWS:
        if key not in metrics:
            continue
        short = "(AP)" if kind.endswith("Precision") else "(AR)"
        lines.append(
            f" {kind:<18} {short} @[ IoU={iou:<9} | area={area:>6} | maxDets={dets:>3} ] "
            f"= {float(metrics[key]):.3f}   {key}"
        )
    return "\n".join(lines)


def write_metrics_json(
    run_dir: str | os.PathLike, metrics: Mapping[str, float], **run_info: Any
) -> str:
    """Write ``run_dir/metrics.json``: the metric keys at top level plus a ``run`` object.

    Returns the file path. ``run_info`` (checkpoint, split, epoch, ...) goes under "run" so that
    every top-level value is a number scripts can compare.
    """
    path = os.path.join(os.fspath(run_dir), "metrics.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    payload: dict[str, Any] = {k: float(v) for k, v in metrics.items()}
    payload["run"] = run_info
    from detr_lightning.checkpointing.atomic_io import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")  # never torn
    return path


def select_decoder_layer(outputs: dict[str, Any], layer: int | None) -> dict[str, Any]:
    """The outputs of decoder layer ``layer`` (0-based; None or the last index: the final
    outputs), read from ``aux_outputs`` for the paper's per-layer evaluation (Fig. 4)."""
    aux = outputs.get("aux_outputs", [])
    if layer is None or layer == len(aux):
        return outputs
    if 0 <= layer < len(aux):
        return aux[layer]
    raise ValueError(
        f"model.eval_decoder_layer={layer} but the decoder has {len(aux) + 1} layers "
        "(0-based; aux_loss must be on to read intermediate layers)"
    )


def with_category_ids(
    preds: list[dict[str, Tensor]],
    targets: Sequence[Mapping[str, Tensor]],
    label_to_category_id: Sequence[int] | None,
) -> list[dict[str, Tensor]]:
    """Add each image's ``image_id`` and ``category_id`` [K] (the dataset's ids) to ``preds``."""
    for p, t in zip(preds, targets, strict=True):
        p["image_id"] = t["image_id"]
        mapping = label_to_category_id
        ids = torch.as_tensor(mapping, device=p["labels"].device) if mapping is not None else None
        p["category_id"] = ids[p["labels"]] if ids is not None else p["labels"]
    return preds
