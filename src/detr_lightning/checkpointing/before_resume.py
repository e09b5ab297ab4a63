"""What a training resume checks and prepares before its trainer exists: the checkpoint's
optimizer groups and recipe against the model and config (refused with the keys to change), that
``trainer.max_epochs`` / ``max_steps`` leave it something to train, and, on rank 0, the run
folders (the temp files a kill left, the CSV log kept, the run continued recorded)."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch import nn

from detr_lightning.checkpointing.atomic_io import remove_abandoned_temp_files
from detr_lightning.checkpointing.optimizer_groups import check_optimizer_groups
from detr_lightning.checkpointing.read import CheckpointLoadError
from detr_lightning.checkpointing.recipe_record import check_resumed_recipe
from detr_lightning.resume_logs import keep_resumed_log, record_resumed_from


def before_resume(checkpoint: Any, model: nn.Module, cfg: DictConfig, ckpt: str) -> None:
    """Run before ``build_trainer`` (whose CSV logger would delete the log that a resume into
    its own folder keeps); ``checkpoint``: the memory-mapped ``torch.load`` of ``ckpt``."""
    check_optimizer_groups(checkpoint, model, ckpt)
    check_resumed_recipe(checkpoint, cfg, ckpt)
    check_training_left(checkpoint, cfg, ckpt)
    if rank_zero_only.rank == 0:
        remove_abandoned_temp_files(os.path.dirname(os.path.abspath(ckpt)))
        keep_resumed_log(cfg)
        record_resumed_from(cfg.paths.output_dir, ckpt, checkpoint.get("global_step", 0))


def check_training_left(checkpoint: Any, cfg: DictConfig, ckpt: str) -> None:
    """CheckpointLoadError when ``trainer.max_epochs`` or ``trainer.max_steps`` ends the run
    before the checkpoint's own epoch or step: Lightning would stop at once with exit status 0
    and the final test would report the checkpoint as the run's result. Limits at the
    checkpoint's end (``max_epochs`` = its epoch + 1, ``max_steps`` = its step) pass: that is a
    finished run's resume, with its final test still to run."""
    epoch, step = int(checkpoint.get("epoch", 0)), int(checkpoint.get("global_step", 0))
    max_epochs, max_steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps")
    if max_epochs is not None and 0 <= max_epochs <= epoch:
        limit = f"trainer.max_epochs={max_epochs} ends training before that epoch"
        fix = f"trainer.max_epochs={epoch + 1} or more"
    elif max_steps is not None and 0 <= max_steps < step:
        limit = f"trainer.max_steps={max_steps} is below that step"
        fix = f"trainer.max_steps={step} or more (-1: no step limit)"
    else:
        return
    raise CheckpointLoadError(
        f"ckpt_path={ckpt} was written in epoch {epoch} (counted from 0) at global step {step}; "
        f"{limit}, so the resumed run would train nothing and report the checkpoint as its "
        f"result. Fix: {fix} to train on; to evaluate the checkpoint as it is: make eval "
        f"EXP=<the run's experiment> CKPT={ckpt}."
    )
