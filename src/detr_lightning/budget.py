"""WallBudget: fit the epochs, the lr cosine and the validations to a wall-time budget.

Works with :func:`~detr_lightning.schedule.budget_schedule` (LitDETR adds this callback when that
schedule is configured). After every epoch it measures the epoch's training and validation time,
plans how many more optimizer steps fit in what is left of the budget and re-aims the cosine at
the last of them. The plan counts in steps, not whole epochs: the last epoch may stop part-way
(``trainer.should_stop`` at the planned step, then the final validation), so the budget's
remainder after the last whole epoch, up to an epoch on a slow machine, is trained rather than
left idle. The epoch time it plans with is the mean over the epochs after the first (the first
also pays for start-up), so a few seconds of timing noise do not move the planned end, and with
it the cosine, back and forth; validation is spaced so that it takes at most ``max_val_share`` of
the time, and always runs after the last (possibly partial) epoch. An epoch longer than the
whole budget does not wait for its end: the first plan is then made inside it, from the time per
step so far (one process only). A faster machine runs more steps, a slower one fewer, and both
finish annealed inside the budget. A positive ``trainer.max_epochs`` caps the plan (the run
then anneals at that epoch's end, or earlier when the budget binds first); -1 leaves the epochs
to the budget. The cap is saved in checkpoints: a resume with another one is refused, or planned
again at once under ``resume_recipe=config`` (checkpointing/recipe_record.py). Under DDP each
rank times its own epochs and rank 0's plan is broadcast, so every rank steps the same lrs and
stops at the same step. This module measures; the arithmetic of a plan is in
:mod:`~detr_lightning.budget_plan`.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L

from detr_lightning.budget_plan import agree, aim, plan_steps
from detr_lightning.schedule import BudgetLR, steps_per_epoch

_UNKNOWN = object()


class WallBudget(L.Callback):
    """See the module docstring. State (time spent so far) is saved in checkpoints, so a resumed
    run continues the same budget."""

    def __init__(self) -> None:
        self.spent_s = 0.0  # training time of finished epochs, across resumptions
        self.train_s_sum, self.train_s_count = 0.0, 0  # epochs after the first, for the mean
        self._epoch_start = 0.0
        self._val_s = 0.0
        self._last_val_s = 0.0
        self._cap: int | None = None  # trainer.max_epochs when positive
        # The checkpoint's cap on a resume; _UNKNOWN from a checkpoint written before it was saved
        self._saved_cap: int | None | object = _UNKNOWN
        self._in_epoch = False  # between an epoch's (or a resumed part's) start and its end
        self._whole_epoch = True  # False for the rest of an epoch resumed from a mid-epoch save
        self._first_step = 0  # global step when the epoch (or its resumed part) started
        self._every = 0  # the planned validation spacing (0: not planned yet)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Read before the first plan overwrites fit_loop.max_epochs (also after a resume).
        cap = trainer.fit_loop.max_epochs
        self._cap = cap if cap is not None and cap > 0 else None

    @property
    def cap_changed(self) -> bool:
        """On a resume (after ``on_fit_start``): whether this run's epoch cap differs from the
        checkpoint's, or the checkpoint does not say (then a replan is the safe side)."""
        return self._saved_cap is _UNKNOWN or self._saved_cap != self._cap

    def _scheduler(self, trainer: L.Trainer) -> BudgetLR:
        for config in trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, BudgetLR):
                return config.scheduler
        raise RuntimeError("WallBudget needs model.lr_schedule = budget_schedule")

    def _begin(self, trainer: L.Trainer, whole: bool) -> None:
        self._epoch_start, self._val_s = time.perf_counter(), 0.0
        self._in_epoch, self._whole_epoch, self._first_step = True, whole, trainer.global_step
        if 0 < trainer.fit_loop.max_epochs <= trainer.current_epoch + 1:
            trainer.check_val_every_n_epoch = 1  # the last epoch always validates

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A run resumed from a mid-epoch checkpoint gets no on_train_epoch_start for that
        # epoch: its rest is timed from here (a fresh run's epoch start follows at once), and
        # a plan made on resume (resume_recipe=config) may end in it, which then validates.
        if self._every:
            trainer.check_val_every_n_epoch = self._every
        self._begin(trainer, whole=False)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._begin(trainer, whole=True)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._val_s += time.perf_counter() - self._val_start
            self._last_val_s = self._val_s

    def _plan_done(self, trainer: L.Trainer) -> bool:
        return trainer.global_step >= self._scheduler(trainer).factor.total_steps

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if not self._every and trainer.world_size == 1:
            self._plan_inside_epoch(trainer)
        # The planned last step may fall inside an epoch: stop there. Lightning still runs the
        # validation of an epoch stopped through should_stop.
        if self._plan_done(trainer):
            trainer.should_stop = True

    def _plan_inside_epoch(self, trainer: L.Trainer) -> None:
        """Before the first plan: when the epoch running now would end after the budget (one
        epoch longer than the whole budget), plan the steps that fit from the time per step so
        far, checked every 5 % of the epoch (3 steps at least). Validation, not measured yet,
        gets ``max_val_share`` of what is left. Under DDP the first plan waits for the epoch's
        end (a decision mid-epoch would need a collective at every check)."""
        steps = steps_per_epoch(trainer)
        done = trainer.global_step - self._first_step
        into = trainer.global_step - trainer.current_epoch * steps  # steps into this epoch
        if done == 0 or done % max(3, steps // 20) or into >= steps:
            return
        scheduler = self._scheduler(trainer)
        elapsed = time.perf_counter() - self._epoch_start - self._val_s
        per_step = elapsed / done
        left_s = (scheduler.budget_s - self.spent_s - elapsed) * (1 - scheduler.max_val_share)
        if per_step * (steps - into) <= left_s:
            return  # the epoch ends inside the budget: planned at its end, as usual
        steps_left = max(0, int(left_s / per_step + 1e-6))
        self._follow(trainer, scheduler, trainer.current_epoch, steps, steps_left, 1, into)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        scheduler = self._scheduler(trainer)
        epoch_s = time.perf_counter() - self._epoch_start
        self.spent_s += epoch_s
        self._in_epoch = False
        if self._plan_done(trainer):
            # on_train_batch_end has stopped the run; a partial epoch stays out of the mean
            pl_module.log("budget/spent_s", self.spent_s)
            return
        done = trainer.current_epoch + 1
        # per epoch: not global_step / done, which a resumed run's partial epoch would skew
        steps = float(steps_per_epoch(trainer))
        train_s = max(epoch_s - self._val_s, 1e-3)
        if not self._whole_epoch:
            # The resumed rest of an epoch stays out of the mean; scaled to a whole epoch, it
            # plans only while there is no mean yet.
            part = max(trainer.global_step - self._first_step, 1) / steps
            train_s = train_s / min(part, 1.0)
            if self.train_s_count:
                train_s = self.train_s_sum / self.train_s_count
        elif trainer.current_epoch > 0:
            self.train_s_sum += train_s
            self.train_s_count += 1
            train_s = self.train_s_sum / self.train_s_count
        steps_left, every = self._plan(
            trainer, scheduler, steps, train_s, validated=self._val_s > 0
        )
        self._follow(trainer, scheduler, done, steps, steps_left, every)
        pl_module.log_dict({
            "budget/planned_epochs": done + steps_left / steps,
            "budget/spent_s": self.spent_s,
            "budget/train_s": train_s,  # the epoch time the plan used
            "budget/val_s": self._last_val_s,
        })  # fmt: skip

    def _plan(
        self, trainer: L.Trainer, scheduler: BudgetLR, steps: float, train_s: float, validated: bool
    ) -> tuple[int, int]:
        """:func:`~detr_lightning.budget_plan.plan_steps` from this run's times; rank 0's under
        DDP."""
        planned = plan_steps(scheduler, self.spent_s, self._last_val_s, train_s, steps, self._cap,
                             trainer.global_step, validated)  # fmt: skip
        return agree(trainer, *planned) if trainer.world_size > 1 else planned

    def _follow(self, trainer: L.Trainer, scheduler: BudgetLR, *plan: float) -> None:
        """:func:`~detr_lightning.budget_plan.aim` at the plan ``(epochs_done, steps, steps_left,
        every[, into_epoch])``, whose validation spacing a resume continues."""
        aim(trainer, scheduler, *plan)
        self._every = trainer.check_val_every_n_epoch

    def replan_resumed(self, trainer: L.Trainer) -> None:
        """Plan again at once from the saved epoch times, for a resumed run whose budget changed
        (``resume_recipe=config``); without a measured epoch the plan waits for the next one."""
        if trainer.global_step == 0 or self.spent_s <= 0:
            return
        steps = float(steps_per_epoch(trainer))
        if self.train_s_count:
            train_s = self.train_s_sum / self.train_s_count
        else:  # only the first epoch (or part of it) ran: its time, start-up included
            train_s = self.spent_s / (trainer.global_step / steps)
        scheduler = self._scheduler(trainer)
        # validated=False: a budget already spent still trains a step, which ends the run with
        # a validation
        steps_left, every = self._plan(trainer, scheduler, steps, train_s, validated=False)
        # The steps a mid-epoch save had done in its epoch (from the step count: Lightning
        # restores the epoch's batch progress only after on_train_start); 0 after an epoch-end
        # save, whose resume starts at the next epoch.
        into = max(trainer.global_step - trainer.current_epoch * int(steps), 0)
        self._follow(trainer, scheduler, trainer.current_epoch, steps, steps_left, every, into)

    def state_dict(self) -> dict[str, Any]:
        # A mid-epoch save counts the epoch's time so far: the resumed rest adds the remainder.
        running = time.perf_counter() - self._epoch_start if self._in_epoch else 0.0
        return {
            "spent_s": self.spent_s + running,
            "every": self._every,
            "last_val_s": self._last_val_s,
            "train_s_sum": self.train_s_sum,
            "train_s_count": self.train_s_count,
            "cap": self._cap,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.spent_s = float(state_dict["spent_s"])
        self._last_val_s = float(state_dict.get("last_val_s", 0.0))
        self.train_s_sum = float(state_dict.get("train_s_sum", 0.0))
        self.train_s_count = int(state_dict.get("train_s_count", 0))
        self._every = int(state_dict.get("every", 0))
        self._saved_cap = state_dict.get("cap", _UNKNOWN)
