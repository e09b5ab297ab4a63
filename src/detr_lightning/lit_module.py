"""LitDETR: DETR's training, evaluation and optimiser wiring as a LightningModule."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from detr_lightning.budget import WallBudget
from detr_lightning.checkpointing import net_record
from detr_lightning.compile import CompileCounter, compile_network
from detr_lightning.data.transforms import keep_objects
from detr_lightning.detr.criterion_args import check_weights_used
from detr_lightning.detr.segmentation import detector_of
from detr_lightning.evaluation.panoptic_evaluator import PanopticEvaluator
from detr_lightning.lit_evaluation import EvaluationSteps
from detr_lightning.lit_optimization import OptimizationHooks
from detr_lightning.schedule import budget_schedule
from detr_lightning.utils.attention_backend import NoCudnnAttention
from detr_lightning.utils.consistent_heads import check_consistent_heads
from detr_lightning.utils.cpu_precision import SlowPrecisionCheck
from detr_lightning.utils.distributed import reduce_tensor
from detr_lightning.utils.finite import NonFiniteLossError, check_losses, check_predictions

__all__ = ["LitDETR", "NonFiniteLossError", "drop_crowd"]

log = logging.getLogger(__name__)

# logged every step too (the last decoder layer's; every key also per epoch in train_epoch/),
# with each extra term's keys (model.criterion.extra_terms)
_STEP_LOGGED = ("loss_ce", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "class_error")


def drop_crowd(target: dict[str, Tensor]) -> dict[str, Tensor]:
    """The target without its ``iscrowd == 1`` objects (DETR never trains on crowd boxes)."""
    if "iscrowd" not in target:
        return target
    return keep_objects(target, target["iscrowd"] == 0)


class LitDETR(EvaluationSteps, OptimizationHooks):
    """DETR + set criterion + COCO evaluation. Training lives here, evaluation in
    :class:`~detr_lightning.lit_evaluation.EvaluationSteps`, the optimiser, schedule and gradient
    clipping in :class:`~detr_lightning.lit_optimization.OptimizationHooks`.

    Args:
        net: the detector (``DETR``); ``net(pixel_values, pixel_mask)`` returns pred_logits
            [B, Q, C+1], pred_boxes [B, Q, 4] normalised cxcywh, aux_outputs.
        criterion: ``SetCriterion`` (owns the matcher and the loss weights).
        postprocess: ``PostProcess``: outputs + (h, w) sizes -> absolute xyxy detections.
        optimizer: partial optimizer (``_partial_: true`` in config) taking param groups; its
            ``lr`` applies to the transformer, heads and input projection.
        lr_schedule: partial ``(optimizer, trainer) -> LRScheduler`` stepped every optimizer
            step (:mod:`detr_lightning.schedule`: step drops, cosine, wall-time budget); None
            keeps the lrs constant.
        lr_backbone: lr of the backbone's trainable layers (and of learned position
            encodings, as the official code); 0 freezes the backbone (its parameters are then
            not given to the optimizer at all).
        lr_multipliers: {part of a parameter name: factor}: those parameters train at that
            multiple of their group's lr (``utils.lr.apply_lr_multipliers``; the deformable
            cross-attention's ``sampling_offsets``: 0.1, as Deformable DETR).
        lr_scaling: None (lrs as written), "linear" or "sqrt" scaling with the total batch
            relative to ``base_batch_size`` (64, the paper's); see ``utils.lr.lr_scale_factor``.
        batch_size: per-device batch, used only by ``lr_scaling``.
        pretrained: official DETR release file ``net`` was initialised from (fine-tuning; the
            class head is re-initialised when ``num_classes`` differs). Recorded only: the
            entry points load it once in ``utils.build.build_model`` (not when resuming).
        num_classes: real classes of the data (recorded in checkpoints).
        label_to_category_id: contiguous label -> dataset category id (recorded in checkpoints;
            predictions use it to report the dataset's ids).
        eval_decoder_layer: evaluate the output of this decoder layer (0-based; None = last),
            the paper's Fig. 4 measurement.
        metric_backend: "faster_coco_eval" or "pycocotools" (both give pycocotools' numbers).
        segmentation: partial ``DETRsegm`` (head=panoptic): ``net`` is wrapped in the panoptic
            mask head, which adds ``pred_masks`` [B, Q, h, w] to the outputs.
        panoptic: partial :class:`~detr_lightning.evaluation.panoptic_evaluator.PanopticEvaluator`
            (head=panoptic): when the outputs have ``pred_masks``, validation and test also
            log PQ, SQ, RQ (all / things ``_th`` / stuff ``_st``) and ``segm_AP*``.
        init_detector: Lightning checkpoint whose detector weights started ``net``'s detector
            (the panoptic recipe's stage 2). Recorded only: loaded once in
            ``utils.build.build_model``, as ``pretrained``.
        compile: ``torch.compile`` the network in place (true, or a dict of ``torch.compile``
            options such as ``{dynamic: true}``); the criterion stays eager. See
            :mod:`detr_lightning.compile` (shapes, recompiles, the ``compile/*`` metrics).
        cudnn_attention: let PyTorch use cuDNN's fused attention while training on CUDA (off by
            default: its backward gives NaN gradients for some feature-map sizes; see
            :mod:`detr_lightning.utils.attention_backend`).
        train_on_crowd: keep ``iscrowd == 1`` objects as targets of the loss (matched like any
            other). False drops them (:func:`drop_crowd`), as the official detection data does;
            the official panoptic data keeps every segment, crowd ones included, so
            ``head=panoptic`` sets it (conf/head/panoptic.yaml). The metrics see them either way.
    """

    def __init__(
        self,
        net: nn.Module,
        criterion: nn.Module,
        postprocess: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_schedule: Callable[..., Any] | None = None,
        lr_backbone: float = 1e-5,
        lr_multipliers: Mapping[str, float] | None = None,
        lr_scaling: str | None = None,
        base_batch_size: int = 64,
        batch_size: int | None = None,
        pretrained: str | None = None,
        num_classes: int | None = None,
        label_to_category_id: Sequence[int] | None = None,
        eval_decoder_layer: int | None = None,
        metric_backend: str = "faster_coco_eval",
        segmentation: Callable[[nn.Module], nn.Module] | None = None,
        panoptic: Callable[..., PanopticEvaluator] | None = None,
        init_detector: str | None = None,
        compile: bool | dict[str, Any] = False,
        cudnn_attention: bool = False,
        train_on_crowd: bool = False,
    ) -> None:
        super().__init__()
        if label_to_category_id is not None:
            label_to_category_id = [int(i) for i in label_to_category_id]
        self.save_hyperparameters(
            ignore=["net", "criterion", "postprocess", "optimizer", "lr_schedule", "segmentation",
                    "panoptic"], logger=False,
        )  # fmt: skip
        check_consistent_heads(detector_of(net), criterion, postprocess)
        self._weights_checked = False
        if segmentation is not None:
            net = segmentation(net)
        self.hparams["label_to_category_id"] = label_to_category_id
        # the composed model.net, set by utils.build.build_model (checkpointing/net_record.py)
        self.net_record: dict[str, Any] | None = None
        self.net, self.criterion, self.postprocess = net, criterion, postprocess
        self.optimizer_factory, self.lr_schedule = optimizer, lr_schedule
        if lr_backbone <= 0:
            for p in self.net.backbone.parameters():
                p.requires_grad_(False)
        self._build_metrics(metric_backend, panoptic)

    def setup(self, stage: str) -> None:
        # An image with more objects than queries would stop the matcher mid-epoch: say so now.
        queries = getattr(detector_of(self.net), "num_queries", None)
        for dataset in getattr(getattr(self.trainer, "datamodule", None), "datasets", {}).values():
            if queries is not None and hasattr(dataset, "check_query_capacity"):
                dataset.check_query_capacity(
                    queries, crowd=self.hparams.get("train_on_crowd", False)
                )

    # ---------------------------------------------------------------- steps
    def forward(self, pixel_values: Tensor, pixel_mask: Tensor) -> dict[str, Any]:
        """pixel_values [B, 3, H, W], pixel_mask [B, H, W] bool (True = real) -> DETR outputs."""
        return self.net(pixel_values, pixel_mask)

    def _step(
        self, batch: Any, stage: str, batch_idx: int = -1
    ) -> tuple[dict[str, Any], dict[str, Tensor], Tensor]:
        """Forward + loss, shared by every stage. Returns (outputs, loss dict, weighted total)."""
        targets = list(batch.targets)
        if not self.hparams.get("train_on_crowd", False):
            targets = [drop_crowd(t) for t in targets]
        if stage == "train":
            outputs = self.net(batch.pixel_values, batch.pixel_mask, targets=targets)
        else:
            outputs = self.net(batch.pixel_values, batch.pixel_mask)
        # Before the matcher: a NaN cost matrix would fail there without naming step or lr.
        check_predictions(self, outputs, batch_idx, stage)
        # Training normalises by the boxes averaged over ranks (official DETR); evaluation by
        # the batch's own, so that an evaluation batch's losses do not depend on the ranks.
        num_boxes = self._global_num_boxes(targets) if stage == "train" else None
        losses = self.criterion(outputs, targets, num_boxes=num_boxes)
        if (
            stage == "train"
            and not self._weights_checked
            and not getattr(self.net, "freeze_detr", False)
            and any(len(t["labels"]) for t in targets)
        ):
            # The first step with boxes computes every loss set (a batch without any has no _dn).
            # A frozen detector (panoptic stage 2) runs in eval mode, without its training-only
            # sets (_enc, _dn, _g<k>), whose weights its own stage already used.
            check_weights_used(getattr(self.criterion, "weight_dict", {}), losses)
            self._weights_checked = True
        return outputs, losses, self.criterion.weighted_total(losses)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        _, losses, total = self._step(batch, "train", batch_idx)
        check_losses(self, losses, total, batch_idx)
        bs = len(batch.targets)
        terms = getattr(self.criterion, "extra_terms", {})
        step_keys = (*_STEP_LOGGED, *(key for term in terms.values() for key in term.keys))
        step_logs = {f"train/{k}": losses[k] for k in step_keys if k in losses}
        step_logs["train/loss"] = total
        # Synced: rank 0 writes the logs, which would otherwise show its own share of the step.
        self.log_dict(step_logs, on_step=True, on_epoch=False, sync_dist=True, batch_size=bs)
        lrs = {f"lr/{group.get('name', 'main')}": group["lr"]
               for group in (self.optimizers().param_groups if self._trainer else [])}  # fmt: skip
        self.log_dict(lrs, on_step=True, on_epoch=False, batch_size=bs)
        epoch_logs = {f"train_epoch/{k}": v for k, v in losses.items()}
        epoch_logs["train_epoch/loss"] = total
        self.log_dict(epoch_logs, on_step=False, on_epoch=True, sync_dist=True, batch_size=bs)
        return total

    # ---------------------------------------------------------------- helpers
    def _global_num_boxes(self, targets: list[dict[str, Tensor]]) -> Tensor:
        """Boxes per process averaged over all processes (the official normalisation), >= 1."""
        n = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=self.device)
        return reduce_tensor(n, "mean", self._trainer).clamp(min=1)

    # ---------------------------------------------------------------- checkpoints
    # ``pretrained`` is loaded once, where the model is built (utils.build.build_model): loading
    # it in setup() re-read the file at every stage and could overwrite trained weights.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["label_to_category_id"] = self.hparams.label_to_category_id
        if self.net_record is not None:  # the architecture (checkpointing/net_record.py)
            checkpoint[net_record.KEY] = self.net_record

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The checkpoint's label mapping wins (the datamodule adopts it too): predictions must
        # use the ids the class head was trained with.
        saved = checkpoint.get("label_to_category_id")
        if saved is not None and list(saved) != self.hparams.label_to_category_id:
            log.warning("using the checkpoint's label_to_category_id (%d labels)", len(saved))
            self.hparams["label_to_category_id"] = [int(i) for i in saved]
        net_record.warn_if_different(checkpoint.get(net_record.KEY), self.net_record,
                                     "the checkpoint")  # fmt: skip

    def configure_callbacks(self) -> list[L.Callback]:
        callbacks: list[L.Callback] = [SlowPrecisionCheck()]
        if self.hparams.get("compile"):
            callbacks.append(CompileCounter())
        if not self.hparams.get("cudnn_attention"):
            callbacks.append(NoCudnnAttention())
        # The budget schedule re-plans epochs and the cosine from measured epoch times.
        if getattr(self.lr_schedule, "func", None) is budget_schedule:
            callbacks.append(WallBudget())
        return callbacks

    def configure_model(self) -> None:
        """``compile``: compile the network once, in place (keys and checkpoints unchanged)."""
        options = self.hparams.get("compile")
        if options and not getattr(self, "_net_compiled", False):
            compile_network(self.net, dict(options) if isinstance(options, Mapping) else None)
            self._net_compiled = True
