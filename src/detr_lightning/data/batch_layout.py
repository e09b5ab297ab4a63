"""The batch layout of a run (batch size, processes, grouping) and the arithmetic of resuming
an epoch at another one: which positions of the epoch's order each DDP rank reads, the whole
order behind a ``DistributedSampler``, and how the ranks' unread positions are evened out
(:meth:`~detr_lightning.data.resumable_batches.ResumableBatches.resume_after` uses them); what
the resumed epoch then runs, as logged (:func:`resume_note`)."""

from __future__ import annotations

import copy
import logging
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
        batches_left: the batches the next pass yields (Lightning reads the first ones only,
            where ``trainer.limit_train_batches`` ends the epoch before: :func:`resume_note`).
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


def resume_note(plan: ResumedEpoch, total: int, accumulate: int) -> tuple[int, str, tuple]:
    """(log level, %-message, its arguments) saying what the resumed epoch of ``plan`` runs, in
    a Lightning epoch of ``total`` batches (``trainer.limit_train_batches`` applied) that steps
    the optimizer every ``accumulate`` batches of its count (which starts at
    ``plan.batches_done``). It ends at once (no batch, no validation) where no batch is left or
    the count is already at ``total``; else it runs ``plan.batches_left`` batches, fewer where
    the limit comes first."""
    level = logging.WARNING if plan.images_left_out else logging.INFO
    if not plan.batches_left:  # all left out: fewer than the processes
        message, args = ("no batch of it is left at this layout (%d of its %d images were trained "
                         "before the stop), so it ends here, without its validation"), (
                         plan.images_trained, plan.images)  # fmt: skip
    elif plan.batches_done >= total:
        message, args = ("the %d of its %d images trained before the stop count as %d batches "
                         "at this layout, and trainer.limit_train_batches ends its epochs at %d, "
                         "so it ends here, without its validation"), (
                         plan.images_trained, plan.images, plan.batches_done, total)  # fmt: skip
    else:
        runs = min(plan.batches_left, total - plan.batches_done)
        message = ("its order goes on at the first of its %d images not trained before the stop "
                   "(%d were), %d batches on each process")  # fmt: skip
        args = (plan.images, plan.images_trained, runs)
        if runs < plan.batches_left:  # Lightning stops reading the planned batches there
            message += (" (trainer.limit_train_batches ends its epochs at %d batches, %d counted "
                        "as done; %d are left in its order)")  # fmt: skip
            args += (total, plan.batches_done, plan.batches_left)
        if not plan.images_left_out:
            message += "; no image left out"
        if plan.batches_done % accumulate:  # Lightning steps at multiples of it of its count
            first = min(runs, accumulate - plan.batches_done % accumulate)
            message += ("; the first optimizer step after it accumulates %d of its "
                        "trainer.accumulate_grad_batches=%d batches (%d counted as done)")  # fmt: skip
            args += (first, accumulate, plan.batches_done)
    if plan.images_left_out:
        message += ("; %d image(s) of this epoch are left out, so that every process gets as "
                    "many batches")  # fmt: skip
        args += (plan.images_left_out,)
    return level, message, args
