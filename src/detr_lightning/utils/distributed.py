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
    """All-reduce ``x`` with op "mean" or "min" over every process (identity when alone)."""
    if world_size(trainer) == 1:
        return x
    if trainer is not None:
        return trainer.strategy.reduce(x, reduce_op=op)
    y = x.clone()
    dist.all_reduce(y, op=dist.ReduceOp.MIN if op == "min" else dist.ReduceOp.SUM)
    return y if op == "min" else y / dist.get_world_size()
