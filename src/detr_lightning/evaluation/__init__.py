"""Evaluation: COCO box AP (torchmetrics, equal to pycocotools) in :mod:`.coco`."""

from detr_lightning.evaluation.coco import (
    CocoBoxAP,
    format_ap_table,
    metric_targets,
    select_decoder_layer,
    with_category_ids,
    write_metrics_json,
)
from detr_lightning.evaluation.panoptic import (
    PanopticQualityMetric,
    match_image,
    pq_compute,
)
from detr_lightning.evaluation.panoptic_io import PanopticImage

__all__ = [
    "CocoBoxAP",
    "format_ap_table",
    "metric_targets",
    "select_decoder_layer",
    "with_category_ids",
    "write_metrics_json",
    "PanopticImage",
    "PanopticQualityMetric",
    "match_image",
    "pq_compute",
]
