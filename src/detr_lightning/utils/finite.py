"""Non-finite guards: stop training where a NaN/inf first appears, before it can reach the
matcher, the weights or a checkpoint.

Three checks, in the order a step meets them: the model's predictions (before the criterion: the
Hungarian matcher cannot assign on a NaN cost matrix and would fail without naming the step),
the loss terms (before backward) and the gradients (before clipping and the optimizer step). Each
raises NonFiniteLossError with the step, epoch, learning rate(s), the offending tensors and the
newest checkpoint to resume from. Under DDP each verdict is all-reduced so every process stops
together, even when only one of them saw the NaN.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from detr_lightning.errors import ExplainedError
from detr_lightning.utils.distributed import reduce_tensor


class NonFiniteLossError(ExplainedError, RuntimeError):
    """A prediction, training loss or gradient became NaN/inf; raised before the optimizer step."""


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


def floating_tensors(tree: Any, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
    """(dotted name, tensor) of every floating-point tensor in nested dicts/lists/tuples."""
    if isinstance(tree, Tensor):
        if tree.is_floating_point():
            yield prefix or "output", tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from floating_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for i, value in enumerate(tree):
            yield from floating_tensors(value, f"{prefix}.{i}" if prefix else str(i))


def grads_finite(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the total gradient norm over the optimizer's parameters is finite."""
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    return not grads or bool(torch.isfinite(torch.nn.utils.get_total_norm(grads)))


def stop_message(
    what: str, step: int, epoch: int, detail: str, last_ckpt: str | None, lr: str = "",
    when: str = "Training stopped before the optimizer step",
) -> str:  # fmt: skip
    """The error text: what went wrong, where, the checkpoint to resume from, the fix."""
    after = f", after lr {lr}" if lr else ""
    return (
        f"Non-finite {what} at global step {step} (epoch {epoch}){after}{detail}. {when}; "
        f"last good checkpoint: {last_ckpt or 'none saved yet'}. Lower the learning rate or "
        "check the data, then resume with ckpt_path=<that checkpoint>."
    )


def current_lrs(module: Any) -> str:
    """``name=lr`` of every param group of the trainer's optimizers ("" outside fitting)."""
    trainer = module._trainer
    optimizers = getattr(trainer, "optimizers", None) if trainer is not None else None
    groups = [g for opt in optimizers or [] for g in opt.param_groups]
    return ", ".join(f"{g.get('name', i)}={g['lr']:.3g}" for i, g in enumerate(groups))


def last_good_checkpoint(module: Any) -> str | None:
    """The newest checkpoint file this run could resume from: any ModelCheckpoint's last or best
    file, or the checkpoint the run itself resumed from (the callbacks of a resumed run write to
    a new directory and start empty). Newest by mtime; with the step when it is known."""
    trainer = module._trainer
    if trainer is None:
        return None
    steps: dict[str, int | None] = {}
    for cb in getattr(trainer, "checkpoint_callbacks", []) or []:
        last = getattr(cb, "last_model_path", "")
        if last:
            steps[os.path.abspath(last)] = getattr(cb, "last_written_step", None)
        best = getattr(cb, "best_model_path", "")
        if best:
            steps.setdefault(os.path.abspath(best), None)
    if getattr(trainer, "ckpt_path", None):
        steps.setdefault(os.path.abspath(str(trainer.ckpt_path)), None)
    existing = [p for p in steps if os.path.isfile(p)]
    if not existing:
        return None
    newest = max(existing, key=os.path.getmtime)
    step = steps[newest]
    return newest if step is None else f"{newest} (global step {step})"


def _first_names(names: list[str], limit: int = 6) -> str:
    """The first ``limit`` names, comma-separated, and how many more there are."""
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _raise(module: Any, what: str, detail: str, when: str) -> None:
    raise NonFiniteLossError(
        stop_message(
            what,
            module.global_step,
            module.current_epoch,
            detail,
            last_good_checkpoint(module),
            current_lrs(module),
            when,
        )  # fmt: skip
    )


def check_predictions(module: Any, outputs: Any, batch_idx: int, stage: str = "train") -> None:
    """Raise NonFiniteLossError (on every process together) when a model output is NaN/inf.

    Called right after the forward pass, before the criterion and its matcher see the outputs
    (every ``pred_*`` tensor: pred_logits, pred_boxes, their aux/encoder/denoising copies)."""
    # Only the predictions (pred_logits, pred_boxes, pred_masks at any depth: aux, encoder and
    # denoising outputs too): internal tensors may hold a deliberate -inf (masked scores).
    named = [
        (n, t) for n, t in floating_tensors(outputs) if n.rsplit(".", 1)[-1].startswith("pred_")
    ]
    if not named:
        return
    ok = torch.stack([torch.isfinite(t.detach()).all() for _, t in named]).float()
    if bool(reduce_tensor(ok.min(), "min", module._trainer) >= 1):
        return
    bad = [name for (name, _), good in zip(named, ok.tolist(), strict=True) if not good]
    shown = _first_names(bad)
    where = f"{stage} batch {batch_idx}"
    detail = f", {where}: {shown or 'on another rank'} (rank {module.global_rank}'s outputs)"
    when = (
        "Training stopped before the matcher, the loss and the optimizer step"
        if stage == "train"
        else f"Stopped in the {stage} loop: the weights give NaN/inf outputs"
    )
    _raise(module, "predictions", detail, when)


def check_losses(module: Any, losses: dict[str, Tensor], total: Tensor, batch_idx: int) -> None:
    """Raise NonFiniteLossError (on every process together) when a loss term is NaN/inf.

    Called by the LightningModule right after the loss, i.e. before backward and the step."""
    bad = non_finite_terms(losses, total, lambda ok: reduce_tensor(ok, "min", module._trainer))
    if bad:
        detail = f", batch {batch_idx}: {', '.join(bad)} (rank {module.global_rank}'s values)"
        _raise(module, "loss", detail, "Training stopped before the optimizer step")


def check_gradients(module: Any, optimizer: torch.optim.Optimizer) -> None:
    """Raise NonFiniteLossError when the gradients are NaN/inf although the loss was finite.

    Called before the optimizer step (and before clipping, which would spread a NaN into every
    weight). Under DDP the gradients are already all-reduced, so every process agrees."""
    if grads_finite(optimizer):
        return
    names = {id(p): n for n, p in module.named_parameters()}
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    bad = [names.get(id(p), "?") for p in params if not torch.isfinite(p.grad).all()]
    if bad:
        detail = f" from a finite loss, in {_first_names(bad)}"
    else:  # each gradient finite, their total norm too large for float32: diverging
        largest = max(p.grad.abs().max().item() for p in params)
        detail = f" from a finite loss (total norm overflows; largest |gradient| {largest:.3g})"
    _raise(module, "gradients", detail, "Training stopped before the step")
