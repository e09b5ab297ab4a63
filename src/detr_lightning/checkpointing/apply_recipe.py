"""``resume_recipe=config``: a resumed run trains on with the composed optimiser settings and lr
schedule, from the step it resumes at.

Lightning restores the optimiser (its moments, step counts and hyperparameters) and the lr
scheduler from ``ckpt_path``. :func:`apply_recipe` then gives every param group the
hyperparameters (lr, weight decay, betas, ...) that the composed config gives it, rebuilds the lr
schedule on the restored optimiser and steps it to the resumed global step, so that from there
on the lr is the one a fresh run of the new recipe would have at that step. The moments and step
counts stay the checkpoint's. Uses:

* extending a run: ``schedule=500ep`` on a ``schedule=300ep`` run moves the lr drop from epoch
  200 to 400 (as Deformable DETR's ``--lr_drop`` override does), ``trainer.max_epochs=100`` on a
  cosine run stretches the cosine;
* resuming on another number of GPUs or another batch size: the drop epochs are counted in the
  new epoch's steps (the checkpoint's schedule counts them in the old one's);
* a budget run given more minutes (``model.lr_schedule.budget_min``): the time already spent
  counts, and the plan is made again at once from the saved epoch times
  (:meth:`~detr_lightning.budget.WallBudget.replan_resumed`).

The param groups themselves must match the checkpoint's
(:mod:`~detr_lightning.checkpointing.optimizer_groups` checks that before training).
"""

from __future__ import annotations

import logging
import warnings

import lightning as L

from detr_lightning.budget import WallBudget
from detr_lightning.schedule import BudgetLR

log = logging.getLogger(__name__)

# Param-group entries that are not hyperparameters of the optimiser's update rule.
_NOT_HYPER = ("params", "initial_lr")


def apply_recipe(trainer: L.Trainer, pl_module: L.LightningModule) -> list[float]:
    """Give the restored optimiser the config's hyperparameters and lr schedule at
    ``trainer.global_step`` (see the module docstring); returns the param groups' lrs now."""
    (optimizer,) = trainer.optimizers
    fresh = pl_module.configure_optimizers()
    groups, new_groups = optimizer.param_groups, fresh["optimizer"].param_groups
    before = [g["lr"] for g in groups]
    # strict: the group lists were compared before training (optimizer_groups)
    for group, new in zip(groups, new_groups, strict=True):
        group.update({k: v for k, v in new.items() if k not in _NOT_HYPER})
        # the schedule built below scales lr from the config's base lr (initial_lr)
        group["lr"] = new.get("initial_lr", new["lr"])
        group.pop("initial_lr", None)
    configs = trainer.lr_scheduler_configs  # the config's (none: constant lrs from here on)
    if configs:
        old = configs[0].scheduler
        scheduler = pl_module.lr_schedule(optimizer, trainer)
        configs[0].scheduler = scheduler
        if isinstance(old, BudgetLR) and isinstance(scheduler, BudgetLR):
            _keep_budget_plan(trainer, old, scheduler)
        with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()"
            warnings.simplefilter("ignore")
            for _ in range(trainer.global_step):
                scheduler.step()
    after = [g["lr"] for g in groups]
    log.warning(
        "resume_recipe=config: the composed optimiser settings and lr schedule apply from step "
        "%d on; lrs %s -> %s",
        trainer.global_step,
        ", ".join(f"{lr:.3g}" for lr in before),
        ", ".join(f"{lr:.3g}" for lr in after),
    )
    return after


def _keep_budget_plan(trainer: L.Trainer, old: BudgetLR, new: BudgetLR) -> None:
    """The new budget schedule goes on with the checkpoint's plan; a changed budget is planned
    again at once from the saved epoch times."""
    new.factor.replan(old.factor.total_steps)
    if new.budget_s != old.budget_s:
        budget = next(c for c in trainer.callbacks if isinstance(c, WallBudget))
        budget.replan_resumed(trainer)
