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
  (:meth:`~detr_lightning.budget.WallBudget.replan_resumed`); so is one given another
  ``trainer.max_epochs`` (the cap on its plan), which otherwise would follow the restored plan.

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


def apply_recipe(trainer: L.Trainer, pl_module: L.LightningModule) -> list[float]:
    """Give the restored optimiser the config's hyperparameters and lr schedule at
    ``trainer.global_step`` (see the module docstring); returns the param groups' lrs now."""
    (optimizer,) = trainer.optimizers
    groups, new_groups = optimizer.param_groups, pl_module.build_optimizer().param_groups
    before = [g["lr"] for g in groups]
    # strict: the group lists were compared before training (optimizer_groups)
    for group, new in zip(groups, new_groups, strict=True):
        group.update({k: v for k, v in new.items() if k != "params"})  # the base lrs
        group.pop("initial_lr", None)  # the schedule built below takes it from lr
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
    """The new budget schedule goes on with the checkpoint's plan; a changed budget or epoch cap
    is planned again at once from the saved epoch times."""
    new.factor.replan(old.factor.total_steps)
    budget = next(c for c in trainer.callbacks if isinstance(c, WallBudget))
    if new.budget_s != old.budget_s or budget.cap_changed:
        budget.replan_resumed(trainer)
