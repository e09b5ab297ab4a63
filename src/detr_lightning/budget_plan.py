"""The arithmetic of :class:`~detr_lightning.budget.WallBudget`'s plans: how many optimizer steps
fit in what is left of a wall-time budget, how far apart the validations go, one plan for every
DDP rank, and the trainer and the cosine aimed at the planned last step. No clock here:
``WallBudget`` measures the times and passes them in.
"""

from __future__ import annotations

import math

import lightning as L

from detr_lightning.schedule import BudgetLR
from detr_lightning.utils.distributed import settle_epoch_metrics


def plan_steps(
    scheduler: BudgetLR,
    spent_s: float,
    val_s: float,
    train_s: float,
    steps: float,
    cap: int | None,
    global_step: int,
    validated: bool,
) -> tuple[int, int]:
    """(optimizer steps left, validation spacing in epochs) for what is left of
    ``scheduler.budget_s`` after ``spent_s`` seconds, given ``steps`` optimizer steps per epoch,
    an epoch's training time ``train_s`` and the last validation's ``val_s``; ``cap`` (a positive
    ``trainer.max_epochs``) bounds the last step; ``validated``: whether the last epoch
    validated."""
    # Validate every n epochs so that validation stays under its share of the time:
    # (val / n) / (train + val / n) <= share  <=>  n >= val (1 - share) / (share train)
    share = scheduler.max_val_share
    every = max(1, math.ceil(val_s * (1 - share) / max(share * train_s, 1e-9) - 1e-9))
    left_s = scheduler.budget_s - spent_s - val_s  # the final validation is certain
    epochs_left = max(0.0, left_s / (train_s + val_s / every))
    steps_left = int(epochs_left * steps + 1e-6)  # 1e-6: an exact plan survives rounding
    capped = False
    if cap is not None:
        cap_left = max(0, round(cap * steps) - global_step)
        capped, steps_left = cap_left <= steps_left, min(steps_left, cap_left)
    if steps_left == 0 and not capped and not validated:
        # The last epoch did not validate (a slow epoch used up the time the plan gave it):
        # one more step makes the next epoch the last, which validates the annealed weights.
        steps_left = 1
    return steps_left, every


def agree(trainer: L.Trainer, steps_left: int, every: int) -> tuple[int, int]:
    """Rank 0's plan for every rank: each rank times its own epochs, and ranks that plan
    different lrs or last steps drift apart and then hang. The epoch's metric reductions run
    first (:func:`~detr_lightning.utils.distributed.settle_epoch_metrics`)."""
    settle_epoch_metrics(trainer)
    return trainer.strategy.broadcast((steps_left, every), src=0)


def aim(
    trainer: L.Trainer,
    scheduler: BudgetLR,
    epochs_done: int,
    steps: float,
    steps_left: int,
    every: int,
    into_epoch: int = 0,
) -> None:
    """Aim the epochs, the validations and the cosine at the planned last step, which lies
    ``steps_left`` steps (of ``steps`` per epoch) after ``epochs_done`` whole epochs and
    ``into_epoch`` steps of the next (a resume from a mid-epoch save); validate every
    ``every`` epochs."""
    trainer.fit_loop.max_epochs = epochs_done + math.ceil((into_epoch + steps_left) / steps - 1e-6)
    trainer.check_val_every_n_epoch = every
    scheduler.factor.replan(trainer.global_step + steps_left)
    if steps_left == 0:
        trainer.should_stop = True
