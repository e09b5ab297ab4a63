"""Evaluation: COCO box AP (torchmetrics, equal to pycocotools) in :mod:`.coco`; panoptic
quality as panopticapi defines it (:mod:`.panoptic`), accumulated as torchmetrics
(:mod:`.panoptic_metrics`), computed inside LitDETR (:mod:`.panoptic_evaluator`) or from COCO
panoptic files (:mod:`.panoptic_io`); what a finished test writes and prints
(:mod:`.run_report`, :mod:`.per_category`); the report's figures (:mod:`.report_plots`)."""

from detr_lightning.evaluation.coco import (
    CocoBoxAP,
    format_ap_table,
    metric_targets,
    select_decoder_layer,
    with_category_ids,
    write_metrics_json,
)
from detr_lightning.evaluation.panoptic import match_image, pq_compute
from detr_lightning.evaluation.panoptic_io import PanopticImage
from detr_lightning.evaluation.panoptic_metrics import PanopticQualityMetric

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
