"""Cross-process helpers that work with a Lightning trainer, bare torch.distributed, or neither."""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from torch import Tensor


def world_size(trainer: Any | None) -> int:
    """Number of processes: the trainer's, else torch.distributed's, else 1."""
    if trainer is not None:
        return trainer.world_size
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def reduce_tensor(x: Tensor, op: str, trainer: Any | None) -> Tensor:
    """All-reduce ``x`` with op "mean", "min" or "max" over every process (identity when
    alone)."""
    if world_size(trainer) == 1:
        return x
    if trainer is not None:
        return trainer.strategy.reduce(x, reduce_op=op)
    y = x.clone()
    extreme = {"min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
    dist.all_reduce(y, op=extreme.get(op, dist.ReduceOp.SUM))
    return y if op in extreme else y / dist.get_world_size()


def settle_epoch_metrics(trainer: Any) -> None:
    """Run the epoch's pending ``sync_dist`` reductions on this rank now; call it before a
    collective of one's own at a training epoch's end.

    Lightning reduces epoch metrics when they are first read. Rank 0's progress bar reads them
    in its ``on_train_epoch_end`` (one collective per metric); the other ranks have no progress
    bar and read them only after the epoch-end hooks. A collective of a later callback would
    then meet rank 0's reductions on the other ranks, and every rank would wait for ever. Read
    here, the reductions pair up first on every rank, as Lightning's EarlyStopping does."""
    _ = trainer.callback_metrics


def refuse_multirun_launch(trainer: Any) -> None:
    """Stop a Hydra multirun (``-m``) job that would start its own DDP processes: Lightning starts
    each further rank by running the command line again, which under ``-m`` is the whole sweep,
    so every rank would run every job. Jobs whose processes come from outside (the SLURM
    launcher, torchrun) pass, as do one-process jobs."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from lightning.pytorch.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    from detr_lightning.utils.config_check import ConfigError

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    launcher = getattr(trainer.strategy, "launcher", None)
    if (
        isinstance(launcher, _SubprocessScriptLauncher)
        and launcher.num_processes > 1
        and not launcher.cluster_environment.creates_processes_externally
    ):
        raise ConfigError(
            f"a multirun (-m) job with {launcher.num_processes} DDP processes on this machine: "
            "Lightning starts each further process by running the command line again, here the "
            "whole sweep. Fix: hydra/launcher=slurm (make sweep LAUNCHER=slurm: SLURM starts the "
            "processes), or trainer.devices=1 (one process per job), or one command per job "
            "without -m."
        )
