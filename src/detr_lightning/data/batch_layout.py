"""The batch layout of a run (batch size, processes, grouping) and the arithmetic of resuming
an epoch at another one: which positions of the epoch's order each DDP rank reads, the whole
order behind a ``DistributedSampler``, and how the ranks' unread positions are evened out
(:meth:`~detr_lightning.data.resumable_batches.ResumableBatches.resume_after` uses them)."""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any

from torch.utils.data import DistributedSampler, Sampler


@dataclass(frozen=True)
class BatchLayout:
    """How a run cut its epochs into batches: images per batch and process, the number of
    (DDP) processes, and whether batches were aspect-ratio grouped. Saved in checkpoints."""

    batch_size: int
    world_size: int = 1
    grouped: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, state: Any) -> BatchLayout | None:
        """The layout a checkpoint recorded; None when it recorded none (or a malformed one)."""
        try:
            return cls(int(state["batch_size"]), int(state["world_size"]), bool(state["grouped"]))
        except (KeyError, TypeError, ValueError):
            return None

    def __str__(self) -> str:
        grouped = ", aspect-ratio grouped" if self.grouped else ""
        return f"batch size {self.batch_size} x {self.world_size} process(es){grouped}"


@dataclass(frozen=True)
class ResumedEpoch:
    """What :meth:`ResumableBatches.resume_after` planned for the next pass (counts of this
    process unless said otherwise).

    Attributes:
        batches_done: the new layout's batches of the epoch counted as done (its epoch's batch
            count less ``batches_left``): Lightning's batch count of the resumed epoch.
        batches_left: the batches the next pass yields.
        images: the epoch's images (all processes).
        images_trained: positions of the epoch's order the interrupted run trained (all
            processes; its batches done x batch size x processes).
        images_left_out: positions neither trained before the stop nor planned (all processes;
            0 on one process; fewer than the processes under DDP).
    """

    batches_done: int
    batches_left: int
    images: int
    images_trained: int
    images_left_out: int


def evened(unread: list[int], keep: int, n: int) -> list[int]:
    """``keep`` of a rank's ``unread`` positions (in order), so that every rank gets as many: it
    drops its padding first (a position ``>= n``: ``DistributedSampler``'s repeat of the order's
    start, which the interrupted run trained), then its first ones."""
    drop = len(unread) - keep
    pads = [p for p in unread if p >= n][:drop]
    real = [p for p in unread if p not in pads]
    return real[len(real) - keep :] if keep else []


def rank_positions(n: int, world: int, rank: int) -> range:
    """The positions of an epoch's order of ``n`` images that rank ``rank`` of ``world`` reads
    (``DistributedSampler``: the order padded to a multiple of ``world``, every world-th)."""
    return range(rank, math.ceil(n / world) * world, world)


def epoch_order(sampler: Sampler) -> tuple[list[int], int, int] | None:
    """(the epoch's whole order, the number of processes, this one's rank) of an index sampler:
    a ``DistributedSampler``'s order over all ranks, any other sampler's own (one process)."""
    if not isinstance(sampler, DistributedSampler):
        return [int(i) for i in sampler], 1, 0
    if type(sampler) is not DistributedSampler or sampler.drop_last:
        return None  # Lightning's wrapper of another sampler, or an order cut per rank
    whole = copy.copy(sampler)  # the same seed, epoch and shuffle, on one rank: no padding
    whole.num_replicas, whole.rank = 1, 0
    whole.num_samples = whole.total_size = len(sampler.dataset)  # type: ignore[arg-type]
    return [int(i) for i in whole], int(sampler.num_replicas), int(sampler.rank)
