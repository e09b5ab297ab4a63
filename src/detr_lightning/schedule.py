"""Learning-rate schedules, chosen in config as a partial ``(optimizer, trainer) -> scheduler``.

* :func:`step_schedule` — the paper's: lr x ``gamma`` at each drop epoch (torch ``MultiStepLR``),
  optionally after a linear warm-up (``LinearLR``).
* :func:`cosine_schedule` — warm-up, then a cosine to zero over ``trainer.max_epochs``
  (``CosineAnnealingLR``).
* :func:`budget_schedule` — for runs with a wall-time budget: the cosine (over the whole run, or
  over its last ``decay_share`` after a constant lr) follows the number of epochs that fit in the
  budget, re-estimated from the measured epoch time after every epoch
  (:class:`BudgetCosine` with the :class:`~detr_lightning.budget.WallBudget` callback), so a slower
  machine runs fewer steps but still ends annealed inside the budget (the last epoch may stop
  part-way, at the planned step).

All step per optimizer step (Lightning ``interval="step"``) and save their state in checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import (
    ChainedScheduler,
    CosineAnnealingLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
)


def steps_per_epoch(trainer: Any) -> int:
    """Optimizer steps per training epoch (after limit_train_batches and accumulation)."""
    trainer.fit_loop.setup_data()  # what estimated_stepping_batches does before counting
    batches = trainer.num_training_batches
    if batches == float("inf"):
        raise ValueError("epoch-based lr schedules need a training dataloader with a length")
    return max(1, -(-int(batches) // trainer.accumulate_grad_batches))


def _with_warmup(optimizer: torch.optim.Optimizer, warmup_steps: int, main: LRScheduler):
    if warmup_steps < 0:
        raise ValueError(f"model.lr_schedule.warmup_steps={warmup_steps}: need >= 0")
    if warmup_steps == 0:
        return main
    # factor (step + 1) / warmup_steps for the first steps, then 1
    warm = LinearLR(optimizer, 1.0 / warmup_steps, 1.0, total_iters=max(1, warmup_steps - 1))
    return ChainedScheduler([warm, main], optimizer)


def step_schedule(
    optimizer: torch.optim.Optimizer,
    trainer: Any,
    drop_epochs: int | Sequence[int] | None = None,
    gamma: float = 0.1,
    warmup_steps: int = 0,
) -> LRScheduler:
    """lr x ``gamma`` at the start of each (0-based) epoch of ``drop_epochs`` (an int is ONE
    drop, e.g. 200 for the paper's 300-epoch schedule), after ``warmup_steps`` linear steps."""
    epochs = (
        []
        if drop_epochs is None
        else [drop_epochs]
        if isinstance(drop_epochs, int)
        else list(drop_epochs)
    )
    steps = steps_per_epoch(trainer) if epochs else 1
    main = MultiStepLR(optimizer, [int(e) * steps for e in epochs], gamma)
    return _with_warmup(optimizer, warmup_steps, main)


def cosine_schedule(
    optimizer: torch.optim.Optimizer, trainer: Any, warmup_steps: int = 0
) -> LRScheduler:
    """Warm-up, then every lr along a half cosine to zero at the end of ``trainer.max_epochs``."""
    if not trainer.max_epochs or trainer.max_epochs < 1:
        raise ValueError("the cosine schedule needs trainer.max_epochs >= 1 (its length)")
    total = steps_per_epoch(trainer) * trainer.max_epochs
    return _with_warmup(optimizer, warmup_steps, CosineAnnealingLR(optimizer, total, eta_min=0.0))


class BudgetCosine:
    """lr factor per step: linear warm-up, constant, then a half cosine to zero over the last
    ``decay_share`` of ``total_steps``, which is re-estimated during training (:meth:`replan`).
    ``decay_share=1`` is the plain cosine ``(1 + cos(pi * step / total_steps)) / 2``; a smaller
    share keeps the peak lr longer (warm-up, stable, decay). A class rather than a closure so
    that ``LambdaLR`` saves its fields in checkpoints."""

    def __init__(self, warmup_steps: int, total_steps: int, decay_share: float = 1.0) -> None:
        if not 0 < decay_share <= 1:
            raise ValueError(f"decay_share={decay_share}: need 0 < decay_share <= 1")
        self.warmup_steps, self.total_steps = int(warmup_steps), max(1, int(total_steps))
        self.decay_share = float(decay_share)

    def __call__(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        progress = min(step, self.total_steps) / self.total_steps
        decay = max(0.0, progress - (1 - self.decay_share)) / self.decay_share
        return warm * 0.5 * (1 + math.cos(math.pi * decay))

    def replan(self, total_steps: int) -> None:
        self.total_steps = max(1, int(total_steps))


class BudgetLR(LambdaLR):
    """``LambdaLR`` over a :class:`BudgetCosine`, carrying the wall budget for
    :class:`~detr_lightning.budget.WallBudget` to read."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        factor: BudgetCosine,
        budget_s: float,
        max_val_share: float = 0.1,
    ) -> None:
        self.factor, self.budget_s, self.max_val_share = factor, budget_s, max_val_share
        super().__init__(optimizer, factor)

    def state_dict(self) -> dict[str, Any]:
        # The factor's fields travel in LambdaLR's "lr_lambdas"; the object itself would need
        # unsafe unpickling to load.
        state = super().state_dict()
        state.pop("factor", None)
        return state


def budget_schedule(
    optimizer: torch.optim.Optimizer,
    trainer: Any,
    budget_min: float,
    warmup_steps: int = 0,
    max_val_share: float = 0.1,
    decay_share: float = 1.0,
) -> BudgetLR:
    """A cosine that ends when ``budget_min`` minutes of training are spent (see the module
    docstring), run over the last ``decay_share`` of the planned steps (the lr stays at its peak
    before; :class:`BudgetCosine`); ``max_val_share`` caps validation's share of the time
    (validation is then run every few epochs, always after the last)."""
    if budget_min <= 0:
        raise ValueError(f"model.lr_schedule.budget_min={budget_min}: need > 0")
    # The first plan, until WallBudget measures an epoch: the epoch cap when there is one, else
    # no end in sight (peak lr through the first epoch).
    cap = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
    first_guess = steps_per_epoch(trainer) * cap if cap else 10**9
    return BudgetLR(
        optimizer,
        BudgetCosine(warmup_steps, first_guess, decay_share),
        budget_min * 60,
        max_val_share,
    )
