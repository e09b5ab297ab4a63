"""What a finished test leaves: ``metrics.json``, the printed AP / PQ tables, the per-category
tables and file (:mod:`.per_category`) and the run directory, on rank 0."""

from __future__ import annotations

from typing import Any

import lightning as L
from omegaconf import DictConfig

from detr_lightning.evaluation.coco import format_ap_table, write_metrics_json
from detr_lightning.evaluation.panoptic_evaluator import format_pq_table
from detr_lightning.evaluation.per_category import report_per_category


def report(
    trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, float], **run_info: Any
) -> str | None:
    """On rank 0: write metrics.json and metrics_per_category.json, print the AP (and PQ)
    tables, the per-category tables and the run directory; the metrics.json path."""
    if not trainer.is_global_zero:
        return None
    run_dir = cfg.paths.output_dir
    path = write_metrics_json(run_dir, metrics, experiment=cfg.get("experiment_name"), **run_info)
    print(format_ap_table(metrics, title=f"COCO bbox evaluation ({cfg.get('experiment_name')})"))
    if "PQ" in metrics:  # head=panoptic: segm AP (things) and PQ / SQ / RQ
        segm = {k[len("segm_") :]: v for k, v in metrics.items() if k.startswith("segm_")}
        if segm:
            print(format_ap_table(segm, title="COCO segm evaluation (thing classes)"))
        print(format_pq_table(metrics, title=f"Panoptic quality ({cfg.get('experiment_name')})"))
    report_per_category(trainer.lightning_module, trainer.datamodule, run_dir)
    print(f"metrics: {path}")
    print(f"run directory: {run_dir}")
    return path
