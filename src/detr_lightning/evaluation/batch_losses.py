"""Evaluation losses averaged over the evaluation split's batches, each batch counted once.

Under DDP the evaluation splits are dealt out in whole single-process batches, with the first
batches repeated so that every rank gets as many (:mod:`detr_lightning.data.eval_sampler`).
Lightning's ``self.log(..., on_epoch=True, sync_dist=True)`` would count those repeats and
average the ranks' means with equal weights whatever their image counts, so ``val/loss`` moved
with the number of processes (6.79 on one process, 7.84 on two, for the same checkpoint).
:class:`BatchLossMean` keeps one entry per batch, keyed by its image ids, gathers the entries
of every rank, drops the repeated batches and averages as one process does: each batch's loss
weighted by its image count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor


class BatchLossMean:
    """Image-weighted mean of per-batch scalar losses over distinct batches (module docstring)."""

    def __init__(self) -> None:
        self._entries: list[tuple[tuple[int, ...], int, dict[str, Tensor]]] = []

    def reset(self) -> None:
        self._entries = []

    def update(self, image_ids: Sequence[int], losses: Mapping[str, Tensor]) -> None:
        """One batch: its images' ids (the batch's identity; len = its image count) and its
        scalar losses (0-dim tensors, kept detached on their device until :meth:`compute`)."""
        values = {k: v.detach() for k, v in losses.items()}
        self._entries.append((tuple(int(i) for i in image_ids), len(image_ids), values))

    def compute(self) -> dict[str, Tensor]:
        """{name: mean over distinct batches of every rank, weighted by images} (float64 sums,
        in image-id order: the same on every rank and for any number of ranks); resets."""
        entries, self._entries = self._entries, []
        flat = [v.float().reshape(()) for _, _, vals in entries for v in vals.values()]
        numbers = iter(torch.stack(flat).cpu().tolist() if flat else [])  # one device copy
        mine = [(ids, n, {k: next(numbers) for k in vals}) for ids, n, vals in entries]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            parts: list = [None] * dist.get_world_size()
            dist.all_gather_object(parts, mine)
            mine = [entry for part in parts for entry in part]
        distinct = {ids: (n, vals) for ids, n, vals in mine}  # a repeat has the same ids
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}
        for ids in sorted(distinct):
            n, vals = distinct[ids]
            for name, value in vals.items():  # a loss some batches lack averages over the rest
                sums[name] = sums.get(name, 0.0) + n * value
                weights[name] = weights.get(name, 0.0) + n
        return {name: torch.tensor(sums[name] / weights[name]) for name in sorted(sums)}
