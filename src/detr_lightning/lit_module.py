"""LitDETR: DETR's training, evaluation and optimiser wiring as a LightningModule."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from detr_lightning.evaluation import (
    CocoBoxAP,
    metric_targets,
    select_decoder_layer,
    with_category_ids,
)
from detr_lightning.utils.distributed import reduce_tensor
from detr_lightning.utils.finite import NonFiniteLossError, check_gradients, check_losses
from detr_lightning.utils.lr import configure_detr_optimization, drop_epochs

__all__ = ["LitDETR", "NonFiniteLossError", "drop_crowd"]

log = logging.getLogger(__name__)

# Target entries with one row per object (filtered together when crowd objects are dropped).
_PER_OBJECT = ("labels", "boxes", "iscrowd", "area", "masks")
_STEP_LOGGED = ("loss_ce", "loss_bbox", "loss_giou", "class_error")


def drop_crowd(target: dict[str, Tensor]) -> dict[str, Tensor]:
    """The target without its ``iscrowd == 1`` objects (DETR never trains on crowd boxes)."""
    if "iscrowd" not in target:
        return target
    keep = target["iscrowd"] == 0
    return {k: v[keep] if k in _PER_OBJECT else v for k, v in target.items()}


class LitDETR(L.LightningModule):
    """DETR + set criterion + COCO evaluation.

    Args:
        net: the detector (``DETR``); ``net(pixel_values, pixel_mask)`` returns pred_logits
            [B, Q, C+1], pred_boxes [B, Q, 4] normalised cxcywh, aux_outputs.
        criterion: ``SetCriterion`` (owns the matcher and the loss weights).
        postprocess: ``PostProcess``: outputs + (h, w) sizes -> absolute xyxy detections.
        optimizer: partial optimizer (``_partial_: true`` in config) taking param groups; its
            ``lr`` applies to the transformer, heads and input projection.
        lr_backbone: lr of the ResNet layers 2-4; 0 freezes the backbone (its parameters are then
            not given to the optimizer at all).
        lr_drop_epochs: epoch(s) at which every lr is multiplied by ``lr_gamma`` (an int is one
            drop, e.g. 200 for the paper's 300-epoch schedule).
        warmup_steps: linear warm-up of every lr over that many optimizer steps (0 = none).
        lr_cosine: also decay every lr to zero along a half cosine over ``trainer.max_epochs``.
        lr_scaling: None (lrs as written), "linear" or "sqrt" scaling with the total batch
            relative to ``base_batch_size`` (64, the paper's); see ``utils.lr.lr_scale_factor``.
        batch_size: per-device batch, used only by ``lr_scaling``.
        pretrained: official DETR release file to initialise ``net`` from (fine-tuning); the class
            head is re-initialised when ``num_classes`` differs. Ignored when resuming.
        num_classes: real classes of the data (recorded in checkpoints).
        label_to_category_id: contiguous label -> dataset category id (recorded in checkpoints;
            predictions use it to report the dataset's ids).
        eval_decoder_layer: evaluate the output of this decoder layer (0-based; None = last),
            the paper's Fig. 4 measurement.
        metric_backend: "faster_coco_eval" or "pycocotools" (both give pycocotools' numbers).
    """

    def __init__(
        self,
        net: nn.Module,
        criterion: nn.Module,
        postprocess: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_backbone: float = 1e-5,
        lr_drop_epochs: int | Sequence[int] | None = None,
        lr_gamma: float = 0.1,
        warmup_steps: int = 0,
        lr_cosine: bool = False,
        lr_scaling: str | None = None,
        base_batch_size: int = 64,
        batch_size: int | None = None,
        pretrained: str | None = None,
        num_classes: int | None = None,
        label_to_category_id: Sequence[int] | None = None,
        eval_decoder_layer: int | None = None,
        metric_backend: str = "faster_coco_eval",
    ) -> None:
        super().__init__()
        if label_to_category_id is not None:
            label_to_category_id = [int(i) for i in label_to_category_id]
        self.save_hyperparameters(
            ignore=["net", "criterion", "postprocess", "optimizer"], logger=False
        )
        self.hparams["lr_drop_epochs"] = drop_epochs(lr_drop_epochs)
        self.hparams["label_to_category_id"] = label_to_category_id
        self.net, self.criterion, self.postprocess = net, criterion, postprocess
        self.optimizer_factory = optimizer
        if lr_backbone <= 0:
            for p in self.net.backbone.parameters():
                p.requires_grad_(False)
        with torch.device("cpu"):  # metric constants need real memory even under a meta init
            self.val_map = CocoBoxAP(backend=metric_backend)
            self.test_map = CocoBoxAP(backend=metric_backend)
        self.test_metrics: dict[str, float] = {}

    # ---------------------------------------------------------------- steps
    def forward(self, pixel_values: Tensor, pixel_mask: Tensor) -> dict[str, Any]:
        """pixel_values [B, 3, H, W], pixel_mask [B, H, W] bool (True = real) -> DETR outputs."""
        return self.net(pixel_values, pixel_mask)

    def _step(self, batch: Any, stage: str) -> tuple[dict[str, Any], dict[str, Tensor], Tensor]:
        """Forward + loss, shared by every stage. Returns (outputs, loss dict, weighted total)."""
        targets = [drop_crowd(t) for t in batch.targets]
        if stage == "train":
            outputs = self.net(batch.pixel_values, batch.pixel_mask, targets=targets)
        else:
            outputs = self.net(batch.pixel_values, batch.pixel_mask)
        losses = self.criterion(outputs, targets, num_boxes=self._global_num_boxes(targets))
        return outputs, losses, self.criterion.weighted_total(losses)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        _, losses, total = self._step(batch, "train")
        check_losses(self, losses, total, batch_idx)
        bs = len(batch.targets)
        step_logs = {f"train/{k}": losses[k] for k in _STEP_LOGGED if k in losses}
        step_logs["train/loss"] = total
        for group in self.optimizers().param_groups if self._trainer else []:
            step_logs[f"lr/{group.get('name', 'main')}"] = group["lr"]
        self.log_dict(step_logs, on_step=True, on_epoch=False, batch_size=bs)
        epoch_logs = {f"train_epoch/{k}": v for k, v in losses.items()}
        epoch_logs["train_epoch/loss"] = total
        self.log_dict(epoch_logs, on_step=False, on_epoch=True, sync_dist=True, batch_size=bs)
        return total

    def _eval_step(self, batch: Any, stage: str, metric: CocoBoxAP) -> dict[str, Any]:
        outputs, losses, total = self._step(batch, stage)
        logs = {f"{stage}/{k}": v for k, v in losses.items()}
        logs[f"{stage}/loss"] = total
        self.log_dict(
            logs, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(batch.targets)
        )
        preds = self.detections(outputs, torch.stack([t["orig_size"] for t in batch.targets]))
        metric.update(preds, metric_targets(batch.targets))
        return {"preds": preds}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "val", self.val_map)

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "test", self.test_map)

    def on_validation_epoch_end(self) -> None:
        self._log_metric("val", self.val_map)

    def on_test_epoch_end(self) -> None:
        self.test_metrics = self._log_metric("test", self.test_map)

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

    # ---------------------------------------------------------------- helpers
    def _log_metric(self, stage: str, metric: CocoBoxAP) -> dict[str, float]:
        values = metric.compute()
        metric.reset()
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()}, sync_dist=True)
        return {k: float(v) for k, v in values.items()}

    def _global_num_boxes(self, targets: list[dict[str, Tensor]]) -> Tensor:
        """Boxes per process averaged over all processes (the official normalisation), >= 1."""
        n = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=self.device)
        return reduce_tensor(n, "mean", self._trainer).clamp(min=1)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        check_gradients(self, optimizer)

    # ---------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        path = self.hparams.pretrained
        if path and (self._trainer is None or self.trainer.ckpt_path is None):
            from detr_lightning.checkpoint import load_pretrained_into

            report = load_pretrained_into(self.net, path)
            log.info(
                "initialised from %s (%d tensors; re-initialised: %s)",
                path,
                len(report["loaded"]),
                report["reinitialized"] or "none",
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["label_to_category_id"] = self.hparams.label_to_category_id

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The checkpoint's label mapping wins (the datamodule adopts it too): predictions must
        # use the ids the class head was trained with.
        saved = checkpoint.get("label_to_category_id")
        if saved is not None and list(saved) != self.hparams.label_to_category_id:
            log.warning("using the checkpoint's label_to_category_id (%d labels)", len(saved))
            self.hparams["label_to_category_id"] = [int(i) for i in saved]

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_detr_optimization(
            self.net, self.criterion, self.optimizer_factory, self.hparams, self.trainer
        )
