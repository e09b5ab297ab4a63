"""Gradient clipping for fused optimizers under mixed precision.

Lightning's mixed-precision plugin refuses to clip when the optimizer unscales gradients inside
its own step (fused AdamW, ``_step_supports_amp_scaling``): with a gradient scaler, what it would
clip is still the scaled gradient. DETR clips every step (0.1) and uses fused AdamW, so
``trainer.precision=bf16-mixed`` or ``16-mixed`` would stop at the first step. Here the true
gradient is clipped instead: under ``bf16-mixed`` there is no scaler and the gradients are
already true; under ``16-mixed`` ``GradScaler.unscale_`` divides them by the scale first, after
which ``GradScaler.step`` hands the fused step no scale, only the inf check it made.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer

__all__ = ["clip_true_gradients"]


def clip_true_gradients(
    optimizer: Optimizer,
    clip_val: float,
    algorithm: str = "norm",
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Clip the gradients of ``optimizer``'s parameters, unscaled first by ``scaler`` if given.

    Args:
        optimizer: the (possibly fused) optimizer whose parameters' ``.grad`` are clipped.
        clip_val: the largest total norm (``algorithm="norm"``, over all parameters together)
            or absolute value per element (``"value"``).
        scaler: the enabled ``GradScaler`` of a ``16-mixed`` run; None under bf16 or fp32.
    """
    if scaler is not None and scaler.is_enabled():
        scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if algorithm == "value":
        torch.nn.utils.clip_grad_value_(params, clip_val)
    elif algorithm == "norm":
        torch.nn.utils.clip_grad_norm_(params, clip_val)
    else:
        raise ValueError(f"trainer.gradient_clip_algorithm={algorithm!r}: use 'norm' or 'value'")
