"""What a training resume checks and prepares before its trainer exists: the checkpoint's
optimizer groups and recipe against the model and config (refused with the keys to change), and,
on rank 0, the run folders (the temp files a kill left, the CSV log kept, the run continued
recorded)."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig
from torch import nn

from detr_lightning.checkpointing.atomic_io import remove_abandoned_temp_files
from detr_lightning.checkpointing.optimizer_groups import check_optimizer_groups
from detr_lightning.checkpointing.recipe_record import check_resumed_recipe
from detr_lightning.resume_logs import keep_resumed_log, record_resumed_from


def before_resume(checkpoint: Any, model: nn.Module, cfg: DictConfig, ckpt: str) -> None:
    """Run before ``build_trainer`` (whose CSV logger would delete the log that a resume into
    its own folder keeps); ``checkpoint``: the memory-mapped ``torch.load`` of ``ckpt``."""
    check_optimizer_groups(checkpoint, model, ckpt)
    check_resumed_recipe(checkpoint, cfg, ckpt)
    if rank_zero_only.rank == 0:
        remove_abandoned_temp_files(os.path.dirname(os.path.abspath(ckpt)))
        keep_resumed_log(cfg)
        record_resumed_from(cfg.paths.output_dir, ckpt, checkpoint.get("global_step", 0))
