"""Non-finite guards: stop training before a NaN/inf can reach the weights or a checkpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from detr_lightning.utils.distributed import reduce_tensor


class NonFiniteLossError(RuntimeError):
    """A training loss or gradient became NaN/inf; raised before the optimizer step."""


def non_finite_terms(
    losses: dict[str, Tensor], total: Tensor, reduce_min: Callable[[Tensor], Tensor] | None = None
) -> list[str]:
    """``name=value`` of every loss term (and the weighted total, "loss") that is not finite.

    ``reduce_min`` (e.g. the strategy's all-reduce with "min") makes the verdict global, so that
    every DDP process stops together even when only one of them saw the NaN.
    """
    names = sorted(losses) + ["loss"]
    values = [losses[k] for k in names[:-1]] + [total]
    ok = torch.stack([torch.isfinite(v.detach()).all() for v in values]).float()
    if reduce_min is not None:
        ok = reduce_min(ok)
    return [f"{n}={v.item():.4g}" for n, v, good in zip(names, values, ok, strict=True) if not good]


def grads_finite(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the total gradient norm over the optimizer's parameters is finite."""
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))


def stop_message(what: str, step: int, epoch: int, detail: str, last_ckpt: str | None) -> str:
    """The error text: what went wrong, where, the checkpoint to resume from, the fix."""
    return (
        f"Non-finite {what} at global step {step} (epoch {epoch}){detail}. Training stopped "
        f"before the optimizer step; last good checkpoint: {last_ckpt or 'none saved yet'}. "
        "Lower the learning rate or check the data, then resume with ckpt_path=<that checkpoint>."
    )


def _last_checkpoint(module: Any) -> str | None:
    trainer = module._trainer
    callback = trainer.checkpoint_callback if trainer is not None else None
    return getattr(callback, "last_model_path", None) or None


def check_losses(module: Any, losses: dict[str, Tensor], total: Tensor, batch_idx: int) -> None:
    """Raise NonFiniteLossError (on every process together) when a loss term is NaN/inf.

    Called by the LightningModule right after the loss, i.e. before backward and the step."""
    bad = non_finite_terms(losses, total, lambda ok: reduce_tensor(ok, "min", module._trainer))
    if bad:
        detail = f", batch {batch_idx}: {', '.join(bad)} (rank {module.global_rank}'s values)"
        raise NonFiniteLossError(
            stop_message(
                "loss", module.global_step, module.current_epoch, detail, _last_checkpoint(module)
            )  # fmt: skip
        )


def check_gradients(module: Any, optimizer: torch.optim.Optimizer) -> None:
    """Raise NonFiniteLossError when the gradients are NaN/inf although the loss was finite.

    Called before the optimizer step (and before clipping, which would spread a NaN into every
    weight). Under DDP the gradients are already all-reduced, so every process agrees."""
    if not grads_finite(optimizer):
        raise NonFiniteLossError(
            stop_message(
                "gradients",
                module.global_step,
                module.current_epoch,
                " from a finite loss",
                _last_checkpoint(module),
            )  # fmt: skip
        )
