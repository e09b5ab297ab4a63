"""Callbacks: validation images with predicted and ground-truth boxes for the loggers."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torchvision.ops import box_convert
from torchvision.utils import draw_bounding_boxes

from detr_lightning.data.transforms import denormalize
from detr_lightning.inference.draw import draw_predictions
from detr_lightning.inference.results import label_name


def draw_detections(
    image: Tensor,
    target: dict[str, Tensor],
    pred: dict[str, Tensor],
    score_threshold: float = 0.5,
    category_ids: Sequence[int] = (),
    names: Sequence[str] | None = None,
) -> Tensor:
    """One image with ground truth (green) and predictions (red, "name score") drawn on it.

    Args:
        image: [3, H, W] ImageNet-normalised, possibly padded.
        target: "boxes" [T, 4] normalised cxcywh w.r.t. "size" (h, w), "labels" [T],
            "size" and "orig_size" [2].
        pred: "boxes" [K, 4] absolute xyxy in the original image, "scores" [K], "labels" [K].
        category_ids, names: label -> dataset category id / class name, as predict prints them
            (:func:`~detr_lightning.inference.results.label_name`; neither: the label).
    Returns:
        uint8 [3, h, w] cropped to the unpadded image.
    """
    h, w = (int(x) for x in target["size"])
    rgb = denormalize(image, (h, w))
    gt = box_convert(target["boxes"].float().cpu(), "cxcywh", "xyxy")
    if len(gt):
        text = [label_name(int(lab), category_ids, names) for lab in target["labels"]]
        gt = gt * torch.tensor([w, h, w, h], dtype=torch.float32)
        rgb = draw_bounding_boxes(rgb, gt, text, colors="lime", width=1)
    oh, ow = (float(x) for x in target["orig_size"])
    scale = torch.tensor([w / ow, h / oh, w / ow, h / oh])
    # Boxes, scores and labels only: masks (panoptic) are at the original size, not this one.
    resized = {"boxes": pred["boxes"].float().cpu() * scale, "scores": pred["scores"],
               "labels": pred["labels"]}  # fmt: skip
    return draw_predictions(rgb, resized, category_ids, names, score_threshold, line_width=1,
                            color=(255, 0, 0))  # fmt: skip


def validation_log_step(trainer: L.Trainer) -> int:
    """The step Lightning logs a validation's val/AP at: its own step counter (the last
    training batch's step, restored on resume); ``trainer.global_step`` is one more there."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


class EveryNEpochs(L.Callback):
    """A callback that acts in one validation per ``every_n_epochs`` epochs (0 = never), never
    in the sanity check: the first validation at or after the end of epoch n, 2n, ... (1-based).

    With a validation every epoch that is epochs n, 2n, ...; when validations are spaced out
    (``check_val_every_n_epoch``, set by the wall-time budget), it is the next validation
    after each multiple of n, so that spacing never skips the pictures altogether.
    """

    every_n_epochs: int = 0
    _window_done = 0  # the last window (epochs // every_n_epochs) acted in
    _acting = False  # whether the running validation acts

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        window = (trainer.current_epoch + 1) // max(self.every_n_epochs, 1)
        self._acting = (
            self.every_n_epochs > 0 and not trainer.sanity_checking and window > self._window_done
        )
        if self._acting:
            self._window_done = window

    def _active(self, trainer: L.Trainer) -> bool:
        return self._acting


class ValidationImageLogger(EveryNEpochs):
    """Every ``every_n_epochs`` epochs, log the first ``num_images`` validation images.

    Ground truth in green, predictions with score >= ``score_threshold`` in red. wandb gets
    ``val/images``, TensorBoard an image grid; with neither, PNGs go to
    ``<run dir>/val_images/epoch<NNN>_<i>.png`` so CSV-only runs can be inspected too.
    """

    def __init__(
        self, every_n_epochs: int = 5, num_images: int = 4, score_threshold: float = 0.5
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.score_threshold = score_threshold
        self._images: list[Tensor] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._images = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._active(trainer) or len(self._images) >= self.num_images:
            return
        if not isinstance(outputs, dict) or "preds" not in outputs:
            return
        ids = pl_module.hparams.get("label_to_category_id") or ()
        names = getattr(getattr(trainer, "datamodule", None), "category_names", None)
        for image, target, pred in zip(
            batch.pixel_values, batch.targets, outputs["preds"], strict=True
        ):
            if len(self._images) >= self.num_images:
                break
            self._images.append(
                draw_detections(image, target, pred, self.score_threshold, ids, names)
            )

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._images:
            return
        epoch = trainer.current_epoch
        step = validation_log_step(trainer)
        wrote = False
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                images = [img.permute(1, 2, 0).numpy() for img in self._images]
                logger.log_image(key="val/images", images=images, step=step)
                wrote = True
            elif isinstance(logger, TensorBoardLogger):
                for i, img in enumerate(self._images):
                    logger.experiment.add_image(f"val/image_{i}", img, step)
                wrote = True
        if not wrote:
            from torchvision.io import write_png

            folder = os.path.join(trainer.default_root_dir, "val_images")
            os.makedirs(folder, exist_ok=True)
            for i, img in enumerate(self._images):
                write_png(img, os.path.join(folder, f"epoch{epoch:03d}_{i}.png"))
        self._images = []


class ElapsedTime(L.Callback):
    """Logs ``time/elapsed_s``, wall seconds since fitting started, with every validation.

    Evaluation time counts: it is what a user waits for. ``benchmarks/convergence.py`` reads
    it beside ``val/AP`` to draw AP-versus-time curves. The seconds so far are saved in
    checkpoints: a resumed run's clock goes on from them (the time between the checkpoint and
    the interruption is not counted: its training was lost too).
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._before_s = 0.0  # seconds of the run before this process resumed it

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter() - self._before_s

    def state_dict(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self._start if self._start is not None else 0.0
        return {"elapsed_s": elapsed}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self._before_s = float(state_dict.get("elapsed_s", 0.0))
        if self._start is not None:  # restored after on_fit_start
            self._start = time.perf_counter() - self._before_s

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._start is None or trainer.sanity_checking:
            return
        pl_module.log("time/elapsed_s", time.perf_counter() - self._start, sync_dist=False)
