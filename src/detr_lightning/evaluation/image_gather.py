"""Gathering per-image metric states over processes that evaluated different numbers of images.

torchmetrics gathers a list state element by element, one collective per element, so every
process must hold as many elements as every other; a process with one image more waits on a
collective that the others never start (or, on gloo, reads a message of the wrong size). With
whole single-process batches per rank (:mod:`detr_lightning.data.eval_sampler`) the ranks'
image counts differ by up to a batch. :class:`GatherImageLists` replaces that gather by one
``all_gather_object`` of all list states, concatenated in rank order; the metrics then keep one
entry per ``image_id`` and order by it, so the result does not depend on the split.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


class GatherImageLists:
    """Mixin for a torchmetrics ``Metric`` whose states are all lists with one entry per image
    (``dist_reduce_fx=None``): any number of entries per process."""

    def _sync_dist(self, dist_sync_fn: Any = None, process_group: Any = None) -> None:
        group = process_group or self.process_group  # type: ignore[attr-defined]
        names = list(self._reductions)  # type: ignore[attr-defined]
        mine = {name: _to_cpu(list(getattr(self, name))) for name in names}
        gathered: list[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(gathered, mine, group=group)
        for name in names:
            setattr(self, name, [entry for part in gathered for entry in part[name]])
