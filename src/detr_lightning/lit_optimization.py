"""LitDETR's optimiser, lr schedule, gradient clipping and gradient check."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from detr_lightning.utils.clipping import clip_true_gradients
from detr_lightning.utils.finite import check_gradients
from detr_lightning.utils.lr import build_scaled_optimizer


class OptimizationHooks(L.LightningModule):
    """The optimisation half of :class:`~detr_lightning.lit_module.LitDETR`.

    Relies on LitDETR's ``net``, ``criterion``, ``optimizer_factory``, ``lr_schedule`` and the
    ``lr_backbone``, ``lr_multipliers`` and ``lr_scaling`` hyperparameters.
    """

    def build_optimizer(self) -> torch.optim.Optimizer:
        """The configured optimiser over its param groups, at the (scaled) base lrs."""
        return build_scaled_optimizer(
            self.net, self.criterion, self.optimizer_factory, self.hparams, self.trainer
        )

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = self.build_optimizer()
        if self.lr_schedule is None:
            return {"optimizer": optimizer}
        scheduler = self.lr_schedule(optimizer, self.trainer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Under 16-mixed the gradient scaler owns overflow: it skips a step whose gradients are
        # inf/NaN and lowers the scale, which its first steps do by design.
        if getattr(self.trainer.precision_plugin, "scaler", None) is None:
            check_gradients(self, optimizer)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Lightning's clipping, except for a fused optimizer under mixed precision, which
        Lightning refuses: there the true gradient is clipped (:mod:`.utils.clipping`)."""
        plugin = self.trainer.precision_plugin
        if (
            gradient_clip_val
            and isinstance(plugin, MixedPrecision)
            and getattr(optimizer, "_step_supports_amp_scaling", False)
        ):
            algorithm = getattr(gradient_clip_algorithm, "value", gradient_clip_algorithm)
            clip_true_gradients(optimizer, gradient_clip_val, algorithm or "norm", plugin.scaler)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
