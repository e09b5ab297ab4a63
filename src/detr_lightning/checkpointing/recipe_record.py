"""Resuming restores the optimiser and the lr schedule from the checkpoint: refuse overrides of
them that the resumed run would silently ignore, unless ``resume_recipe=config`` applies them.

Lightning reloads the optimiser's state (its lrs included) and the scheduler's (a budget
schedule's minutes and shares, the step of a drop, the length of a cosine) from ``ckpt_path``,
so ``model.optimizer.lr=5e-5`` or ``model.lr_schedule.budget_min=5`` on a resume composed, was
saved in the new run's ``.hydra/config.yaml``, and changed nothing. :class:`RecipeRecord` saves
the resolved values of those keys (:data:`RESTORED`, and ``trainer.max_epochs`` under the
schedules whose length it sets: :data:`EPOCH_LENGTH_SCHEDULES`) and the optimizer steps per
epoch in every checkpoint, and the :data:`NOTED` settings (seed, batch size, training data,
accumulation, clipping), which a resume may change: a change is logged, since the resumed run
then no longer ends as the uninterrupted one would. A mid-epoch resume with another batch size
or number of processes goes on at the first image of the epoch the run had not reached
(``data/resumable_batches.py``), not at its count of batches.

``trainer.max_epochs`` under the budget schedule caps the plan, and the plan (the step the
cosine anneals at) is restored with the scheduler: a resume with another cap followed the
restored plan until the next epoch's end and then cut or stretched the cosine part-way, and one
that extended a finished run trained a step at lr 0 and stopped. So it is a recipe key like
``budget_min``: refused by default, and applied at once under ``resume_recipe=config``
(:meth:`~detr_lightning.budget.WallBudget.replan_resumed`). Checkpoints written before it was
recorded lack it: :data:`RECORDED_LATER` keys absent from a checkpoint's record are not compared,
so those checkpoints resume as they did (their cap is unknown).

* ``resume_recipe=checkpoint`` (the default) resumes the run as it was:
  :func:`check_resumed_recipe` refuses a changed key before training, and
  :meth:`RecipeRecord.on_train_start` refuses another number of steps per epoch (other GPUs, batch
  size or ``limit_train_batches``) under a schedule whose drops or length are counted in steps
  from epochs, since those would then fall at other epochs.
* ``resume_recipe=config`` trains on with the composed settings from the resumed step
  (:mod:`~detr_lightning.checkpointing.apply_recipe`); the changes are logged.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from omegaconf import DictConfig, ListConfig, OmegaConf

from detr_lightning.checkpointing.read import CheckpointLoadError
from detr_lightning.schedule import cosine_schedule, step_schedule, steps_per_epoch

log = logging.getLogger(__name__)

# The keys whose effect a resume takes from the checkpoint instead of the config.
RESTORED = ("model.optimizer", "model.lr_backbone", "model.lr_multipliers", "model.lr_scaling",
            "model.base_batch_size", "model.lr_schedule")  # fmt: skip
# The schedules whose length (cosine) or cap on the planned length (budget) trainer.max_epochs is.
EPOCH_LENGTH_SCHEDULES = (".cosine_schedule", ".budget_schedule")
# Settings a resume takes from the config, which may change, but with which the resumed run no
# longer ends as the uninterrupted one would: a change is logged, not refused.
NOTED = ("seed", "data.batch_size", "data.train_images", "data.train_ann",
         "trainer.accumulate_grad_batches", "trainer.gradient_clip_val")  # fmt: skip
# Recorded after checkpoints were written without them: compared only when the record has them.
RECORDED_LATER = ("trainer.max_epochs", *NOTED)


def recipe_record(cfg: DictConfig) -> dict[str, Any]:
    """{dotted key: resolved value} of every leaf under :data:`RESTORED` in ``cfg``."""
    out: dict[str, Any] = {}
    for key in RESTORED:
        node = OmegaConf.select(cfg, key)
        value = (
            OmegaConf.to_container(node, resolve=True)
            if isinstance(node, (DictConfig, ListConfig))
            else node
        )
        _flatten(key, value, out)
    if str(OmegaConf.select(cfg, "model.lr_schedule._target_")).endswith(EPOCH_LENGTH_SCHEDULES):
        out["trainer.max_epochs"] = OmegaConf.select(cfg, "trainer.max_epochs")
    for key in NOTED:
        out[key] = OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False)
    return out


_ABSENT = object()


def _compared(key: str, value: Any) -> Any:
    """``value`` as a resume compares it: ``trainer.max_epochs`` null as -1, since under the
    budget schedule both leave the epochs to the budget (the cosine refuses either)."""
    return -1 if key == "trainer.max_epochs" and value is None else value


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value


class RecipeRecord(L.Callback):
    """Saves :func:`recipe_record` of the training config and the optimizer steps per epoch in
    the checkpoint; on a resume, applies the config's recipe (``mode="config"``) or refuses a
    changed number of steps per epoch that the restored schedule counts in (see the module
    docstring)."""

    def __init__(self, record: dict[str, Any], mode: str = "checkpoint") -> None:
        self.record, self.mode = record, mode
        self.steps_per_epoch: int | None = None  # this run's, once training starts
        self.saved_steps_per_epoch: int | None = None  # the checkpoint's

    def state_dict(self) -> dict[str, Any]:
        return {"recipe": dict(self.record), "steps_per_epoch": self.steps_per_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # The recipe itself was compared before ``fit`` (:func:`check_resumed_recipe`).
        self.saved_steps_per_epoch = state_dict.get("steps_per_epoch")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.steps_per_epoch = steps_per_epoch(trainer)
        if trainer.ckpt_path is None:
            return
        if self.mode == "config":
            from detr_lightning.checkpointing.apply_recipe import apply_recipe

            apply_recipe(trainer, pl_module)
            return
        saved, now = self.saved_steps_per_epoch, self.steps_per_epoch
        if saved is not None and saved != now and _counts_epochs_in_steps(pl_module):
            raise CheckpointLoadError(
                f"ckpt_path={trainer.ckpt_path}: an epoch has {now} optimizer steps here and "
                f"had {saved} in the run (another number of devices, data.batch_size, "
                "trainer.accumulate_grad_batches or trainer.limit_train_batches), and the "
                "restored lr schedule counts its drop epochs or its length in the run's steps, "
                "so they would fall at other epochs. Fix: resume with the run's settings, or "
                "rebuild the schedule for the new epoch from the resumed step: "
                "resume_recipe=config."
            )


def _counts_epochs_in_steps(pl_module: L.LightningModule) -> bool:
    """Whether the module's lr schedule turns epochs into a count of steps when it is built: a
    step schedule with drops, or the cosine (the budget schedule plans in measured steps)."""
    schedule = getattr(pl_module, "lr_schedule", None)
    func = getattr(schedule, "func", None)
    if func is cosine_schedule:
        return True
    return func is step_schedule and bool(schedule.keywords.get("drop_epochs"))


def check_resumed_recipe(checkpoint: Any, cfg: DictConfig, path: str) -> None:
    """CheckpointLoadError listing each :data:`RESTORED` key whose value in ``cfg`` differs from
    the one recorded in the checkpoint ``path`` (nothing to compare in a checkpoint without a
    record, e.g. one written before the record existed; nor a :data:`RECORDED_LATER` key its
    record lacks); a logged warning for each differing :data:`NOTED` key."""
    states = checkpoint.get("callbacks", {}) if isinstance(checkpoint, dict) else {}
    saved = next((s["recipe"] for k, s in states.items()
                  if "RecipeRecord" in str(k) and isinstance(s, dict) and "recipe" in s), None)  # fmt: skip
    if saved is None:
        return
    current = recipe_record(cfg)
    for key in RECORDED_LATER:
        if key not in saved:
            current.pop(key, None)
    differing = [k for k in sorted(set(saved) | set(current))
                 if _compared(k, saved.get(k, _ABSENT)) != _compared(k, current.get(k, _ABSENT))]  # fmt: skip
    described = {k: f"{k}: {saved.get(k, '(absent)')!r} in the run, "
                    f"{current.get(k, '(absent)')!r} here" for k in differing}  # fmt: skip
    if noted := [described[k] for k in differing if k in NOTED]:
        log.warning("ckpt_path=%s: these settings differ from the run's; they apply from the "
                    "resumed step on, so the run will not end as the uninterrupted one would:"
                    "\n  - %s", path, "\n  - ".join(noted))  # fmt: skip
    changed = [described[k] for k in differing if k not in NOTED]
    if changed and cfg.get("resume_recipe") == "config":
        log.warning("ckpt_path=%s, resume_recipe=config: these settings differ from the run's "
                    "and apply from the resumed step on:\n  - %s", path, "\n  - ".join(changed))  # fmt: skip
    elif changed:
        raise CheckpointLoadError(
            f"ckpt_path={path}: resuming restores the optimiser and the lr schedule from the "
            "checkpoint, so these settings, which differ from the run's, would be ignored:\n  - "
            + "\n  - ".join(changed)
            + "\nFix: drop those overrides to resume the run as it was; to train on with them "
            "from the resumed step (the optimiser's moments kept, the lr schedule rebuilt at "
            "that step): resume_recipe=config; to start a new run from its weights: "
            f"ckpt_path=null model.init_detector={path}."
        )
