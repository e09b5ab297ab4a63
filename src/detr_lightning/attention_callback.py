"""Callback: the paper's attention pictures of a few validation images, every N epochs.

Enabled with ``callbacks.attention_maps.every_n_epochs=N`` (0, the default, turns it off). At
the first validation batch of every N-th epoch, the first ``num_images`` images go through the
detector once more with :class:`~detr_lightning.inference.attention.AttentionCapture` (hooks:
the validation outputs and metrics are not touched), and
:func:`~detr_lightning.inference.explain.attention_figures` draws each image's decoder
cross-attention per detected object and, with encoder layers, the encoder self-attention at a
few reference points. wandb gets ``val/attention_decoder`` / ``val/attention_encoder``,
TensorBoard the same tags; without either, PNGs go to
``<run dir>/attention_maps/epoch<NNN>_<i>_{decoder,encoder}.png``.
"""

from __future__ import annotations

import os
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from detr_lightning.callbacks import EveryNEpochs, validation_log_step


class AttentionMapLogger(EveryNEpochs):
    """Log attention figures of the first validation images (module docstring).

    Args:
        every_n_epochs: draw after every N-th epoch's first validation batch; 0 = never.
        num_images: images of that batch to draw.
        score_threshold, max_objects: objects that get a decoder map.
        num_points: encoder reference points (the top objects' centres, then a grid).
    """

    def __init__(
        self,
        every_n_epochs: int = 0,
        num_images: int = 2,
        score_threshold: float = 0.5,
        max_objects: int = 6,
        num_points: int = 4,
    ) -> None:
        self.every_n_epochs, self.num_images = every_n_epochs, num_images
        self.score_threshold, self.max_objects = score_threshold, max_objects
        self.num_points = num_points

    @rank_zero_only
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or not self._active(trainer):
            return
        from detr_lightning.data.transforms import denormalize
        from detr_lightning.inference.attention_plot import figure_to_array
        from detr_lightning.inference.explain import attention_figures

        n = min(self.num_images, len(batch.targets))
        images = [
            denormalize(batch.pixel_values[i], tuple(int(v) for v in batch.targets[i]["size"]))
            for i in range(n)
        ]
        ids = pl_module.hparams.get("label_to_category_id") or list(
            range(int(pl_module.hparams.get("num_classes") or 0))
        )
        names = getattr(getattr(trainer, "datamodule", None), "category_names", None)
        figures = attention_figures(
            pl_module.net, batch.pixel_values[:n], batch.pixel_mask[:n], images, ids, names,
            self.score_threshold, self.max_objects, self.num_points,
        )  # fmt: skip
        pictures: dict[str, list] = {"decoder": [], "encoder": []}
        for figs in figures:
            pictures["decoder"].append(figure_to_array(figs.decoder))
            if figs.encoder is not None:
                pictures["encoder"].append(figure_to_array(figs.encoder))
        self._log(trainer, pictures)

    def _log(self, trainer: L.Trainer, pictures: dict[str, list]) -> None:
        step = validation_log_step(trainer)  # with the val/AP of this validation
        wrote = False
        for logger in trainer.loggers:
            for kind, arrays in pictures.items():
                if not arrays:
                    continue
                key = f"val/attention_{kind}"
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=key, images=arrays, step=step)
                    wrote = True
                elif isinstance(logger, TensorBoardLogger):
                    for i, arr in enumerate(arrays):
                        logger.experiment.add_image(f"{key}_{i}", arr, step, dataformats="HWC")
                    wrote = True
        if wrote:
            return
        from PIL import Image

        folder = os.path.join(trainer.default_root_dir, "attention_maps")
        os.makedirs(folder, exist_ok=True)
        for kind, arrays in pictures.items():
            for i, arr in enumerate(arrays):
                name = f"epoch{trainer.current_epoch:03d}_{i}_{kind}.png"
                Image.fromarray(arr).save(os.path.join(folder, name))
