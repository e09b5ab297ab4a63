"""LitDETR's validation, test and predict steps: losses, COCO box AP and panoptic metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from torch import Tensor

from detr_lightning.detr.class_scoring import scoring_of
from detr_lightning.evaluation import (
    CocoBoxAP,
    metric_targets,
    select_decoder_layer,
    with_category_ids,
)
from detr_lightning.evaluation.batch_losses import BatchLossMean
from detr_lightning.evaluation.panoptic_evaluator import PanopticEvaluator, ground_truth_dataset
from detr_lightning.evaluation.per_category import logged_scalars, module_records


class EvaluationSteps(L.LightningModule):
    """The evaluation half of :class:`~detr_lightning.lit_module.LitDETR`.

    Relies on LitDETR's ``net``, ``postprocess``, ``_step`` (forward + losses) and the
    ``eval_decoder_layer`` and ``label_to_category_id`` hyperparameters.
    """

    def _build_metrics(
        self, metric_backend: str, panoptic: Callable[..., PanopticEvaluator] | None
    ) -> None:
        with torch.device("cpu"):  # metric constants need real memory even under a meta init
            self.val_map = CocoBoxAP(backend=metric_backend)
            self.test_map = CocoBoxAP(backend=metric_backend, class_metrics=True)
            self.val_panoptic = panoptic(metric_backend=metric_backend) if panoptic else None
            self.test_panoptic = panoptic(metric_backend=metric_backend) if panoptic else None
        self.test_metrics: dict[str, float] = {}
        self.test_per_class: dict[int, dict[str, float]] = {}  # CocoBoxAP.per_class
        self.test_pq_per_class: dict[int, dict[str, Any]] = {}  # PanopticEvaluator.per_class
        self.eval_losses = {"val": BatchLossMean(), "test": BatchLossMean()}

    def _eval_step(
        self, batch: Any, stage: str, metric: CocoBoxAP, batch_idx: int = -1
    ) -> dict[str, Any]:
        outputs, losses, total = self._step(batch, stage, batch_idx)
        logs = {f"{stage}/{k}": v for k, v in losses.items()}
        logs[f"{stage}/loss"] = total
        # Logged at the epoch's end, each batch once over all ranks (evaluation/batch_losses.py)
        self.eval_losses[stage].update([int(t["image_id"]) for t in batch.targets], logs)
        preds = self.detections(outputs, torch.stack([t["orig_size"] for t in batch.targets]))
        metric.update(preds, metric_targets(batch.targets))
        panoptic = self.val_panoptic if stage == "val" else self.test_panoptic
        if panoptic is not None and "pred_masks" in outputs:
            panoptic.update(
                outputs, batch.pixel_values, batch.targets, ground_truth_dataset(self.trainer, stage),
                self.hparams.label_to_category_id, scoring=scoring_of(self.net),
            )  # fmt: skip
        return {"preds": preds}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "val", self.val_map, batch_idx)

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "test", self.test_map, batch_idx)

    def on_validation_epoch_start(self) -> None:
        self.eval_losses["val"].reset()  # a loop stopped mid-way (SIGTERM) left its batches

    def on_test_epoch_start(self) -> None:
        self.eval_losses["test"].reset()

    def on_validation_epoch_end(self) -> None:
        self._log_metric("val", self.val_map, self.val_panoptic)

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self._log_metric("test", self.test_map, self.test_panoptic)
        self.test_per_class = dict(self.test_map.per_class)
        self.test_pq_per_class = dict(self.test_panoptic.per_class) if self.test_panoptic else {}
        datamodule = getattr(self.trainer, "datamodule", None)
        scalars = logged_scalars(*module_records(self, datamodule))
        # the same on every rank already: sync_dist averages equal numbers
        self.log_dict({k: float(v) for k, v in scalars.items()}, sync_dist=True)

    def predict_step(self, batch: Any, batch_idx: int) -> list[dict[str, Any]]:
        """Detections per image with the dataset's category ids (``category_id`` [K])."""
        outputs = self.net(batch.pixel_values, batch.pixel_mask)
        preds = self.detections(outputs, torch.stack([t["orig_size"] for t in batch.targets]))
        return with_category_ids(preds, batch.targets, self.hparams.label_to_category_id)

    def detections(self, outputs: dict[str, Any], sizes: Tensor) -> list[dict[str, Tensor]]:
        """Post-process the evaluated decoder layer; sizes [B, 2] (h, w) -> absolute xyxy boxes."""
        return self.postprocess(
            select_decoder_layer(outputs, self.hparams.eval_decoder_layer), sizes
        )

    def _log_metric(
        self, stage: str, metric: CocoBoxAP, panoptic: PanopticEvaluator | None = None
    ) -> dict[str, float]:
        values = metric.compute()
        metric.reset()
        # the same on every rank already: sync_dist below averages equal numbers
        self.log_dict(self.eval_losses[stage].compute(), sync_dist=True)
        if panoptic is not None:  # PQ_*, segm_AP_* (nothing when the outputs had no masks)
            values.update({k: torch.tensor(v) for k, v in panoptic.compute().items()})
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, sync_dist=True)
        return {k: float(v) for k, v in values.items()}
