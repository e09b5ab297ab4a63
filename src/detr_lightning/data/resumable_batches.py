"""Batch samplers that can start their next pass part-way through an epoch, so that a run resumed
from a checkpoint written mid-epoch (``every_n_train_steps``, SIGTERM, Ctrl-C) trains on the
images the interrupted epoch had not reached, in that epoch's order, instead of restarting the
epoch.

Lightning restores the loop's batch count but not the loader's position: without more, the
resumed epoch draws its remaining batches from the start of the epoch's order, so the first
images of the epoch are trained on twice and the last ones not at all. The position is set by
``data/epoch_streams.py`` when the resumed epoch starts; the batches before it are skipped as
index lists (no image is read), and the pass after that one is whole again.

**The position is one of images, not of batches.** Resumed with the batches of the interrupted
run (same ``data.batch_size``, number of processes and grouping: the checkpoint's
:class:`~detr_lightning.data.batch_layout.BatchLayout`), the pass starts at batch ``done``
(:meth:`ResumableBatches.start_at`). Resumed with another layout (``data.batch_size`` changed,
noted or under ``resume_recipe=config``; another number of DDP processes), skipping ``done``
batches *of the new size* would skip other images than the run had trained (batch 4 → 3 after
3 batches: 9 skipped of the 12 trained, 3 trained twice; 4 → 6: 6 never trained).
:meth:`ResumableBatches.resume_after` instead replays the interrupted run's batches of that
epoch (every old rank's, on the epoch's global order, the one ``EpochRandomSampler`` and
Lightning's ``DistributedSampler`` share for a seed) to find the positions it trained, and
batches the positions it had not reached, in the epoch's order, at the new size. On one process
nothing is left out. Under DDP every rank must get as many batches: where the unread positions
do not divide evenly, the ranks with more drop ``DistributedSampler``'s padding first (a repeat
of the epoch's first images, which the run had trained), then their first ones (the nearest
choice that trains no image twice); the count left out (fewer than the number of processes) is
logged as a warning (``data/epoch_streams.py``). Aspect-ratio grouped batches train positions
out of the order's, so the ranks' unread positions can differ by more than one: they are then
dealt out again, in the order's, without padding. Lightning's batch count of the epoch is then
set to the new layout's equivalent (its epoch's batches less the ones left), so the epoch ends,
and validates, after the last of them; under ``trainer.limit_train_batches`` it ends where that
count reaches the limit (at once, without validating, where it is there already).

Lightning steps the optimizer where its count of the epoch's batches reaches a multiple of
``trainer.accumulate_grad_batches`` (A), and at the epoch's last batch, so the first optimizer
step after the resume accumulates ``A - count % A`` batches: at the same layout that is A after a
checkpoint written between steps (every ``n`` steps always is), and after one written k batches
into a step (SIGTERM, Ctrl-C), A - k: the k batches' gradients were not saved, their images count
as trained (Lightning's own resume). At another layout the count is the new layout's equivalent,
whatever the stop, so that step can accumulate fewer batches than A (12 images, batch 2, A = 2,
stopped after step 1: resumed at batch 3, count 4 - 3 = 1, steps of 3 then 5 images where the run
at batch 3 steps on 6 and 6); Lightning's loss is the mean over A batches, so its gradient is
that share of a whole step's. The later steps are whole, the epoch's last as in any epoch. The
epoch's end and its validation are tied to that count, so the step cannot be made whole; the
log line of the resume says how many batches it accumulates.

Both training batch samplers (:class:`ResumableBatchSampler`, and the aspect-ratio grouped one in
``data/sampler.py``) take the index sampler as their ``sampler`` argument, so under DDP Lightning
re-instantiates them around its ``DistributedSampler`` and each rank skips its own batches.
Each index they hand out carries the seed of its sample's augmentation
(:mod:`detr_lightning.data.sample_seeds`), which depends on the image, not on its batch, so an
image keeps its augmentation whatever layout it is trained in.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator

from torch.utils.data import BatchSampler, DistributedSampler, Sampler

from detr_lightning.data.batch_layout import (
    BatchLayout,
    ResumedEpoch,
    epoch_order,
    evened,
    rank_positions,
)
from detr_lightning.data.sample_seeds import seeded_indices


def chunks(items: Iterable[int], batch_size: int) -> Iterator[list[int]]:
    """Consecutive batches of ``batch_size`` items, the last one possibly shorter."""
    it = iter(items)
    while batch := list(itertools.islice(it, batch_size)):
        yield batch


class ResumableBatches:
    """A batch sampler mixin: :meth:`start_at` makes the next pass begin at a given batch,
    :meth:`resume_after` at the first image an interrupted run of another layout had not reached.
    Subclasses yield the epoch's batches from :meth:`batches` (of items grouped by
    :meth:`batches_of`); a pass hands them out as indices that carry their sample's seed
    (:func:`~detr_lightning.data.sample_seeds.seeded_indices` of ``sampler``, the index
    sampler)."""

    sampler: Sampler
    batch_size: int
    grouped = False
    _start = 0
    _plan: list[list[int]] | None = None

    def start_at(self, batch: int) -> None:
        """Make the next pass skip the epoch's first ``batch`` batches (``batch >= 0``)."""
        if batch < 0:
            raise ValueError(f"start_at({batch}): a batch position is >= 0")
        self._start, self._plan = int(batch), None

    def batches_of(
        self, items: Iterable[int], batch_size: int, index: Callable[[int], int] = int
    ) -> Iterator[list[int]]:
        """``items`` cut into this sampler's batches of ``batch_size`` (``index``: the dataset
        index of an item, for samplers that batch by image)."""
        return chunks(items, batch_size)

    def batches(self) -> Iterator[list[int]]:
        """The epoch's batches of dataset indices, from the first."""
        return self.batches_of(self.sampler, self.batch_size)

    def layout(self) -> BatchLayout:
        """This sampler's :class:`BatchLayout` (the number of processes from its index sampler:
        ``num_replicas`` of a ``DistributedSampler``, else 1)."""
        world = self.sampler.num_replicas if isinstance(self.sampler, DistributedSampler) else 1
        return BatchLayout(int(self.batch_size), int(world), self.grouped)

    def resume_after(self, batches: int, before: BatchLayout) -> ResumedEpoch | None:
        """Make the next pass yield, at this sampler's layout, the positions of the epoch's order
        that a run of layout ``before`` had not reached after ``batches`` batches per process
        (module docstring); None, and nothing planned, where the interrupted run's batches
        cannot be replayed here (it was grouped and this sampler is not, or the index sampler is
        a ``DistributedSampler`` of another kind or with ``drop_last``). Call it after the
        index sampler's ``set_epoch``: it reads the epoch's order once, now."""
        if batches < 0:
            raise ValueError(f"resume_after({batches}): a batch count is >= 0")
        if before.grouped and not self.grouped:
            return None
        whole = epoch_order(self.sampler)
        if whole is None:
            return None
        order, world, rank = whole
        n = len(order)

        def index(position: int) -> int:  # DistributedSampler pads with the order's start
            return order[position % n]

        trained: set[int] = set()
        for old_rank in range(before.world_size):
            positions = rank_positions(n, before.world_size, old_rank)
            cut = (self.batches_of(positions, before.batch_size, index) if before.grouped
                   else chunks(positions, before.batch_size))  # fmt: skip
            trained.update(itertools.chain.from_iterable(itertools.islice(cut, batches)))
        trained = {p % n for p in trained}  # trained padding: the image at that position
        unread = [
            [p for p in rank_positions(n, world, r) if p not in trained] for r in range(world)
        ]
        real = [sum(p < n for p in u) for u in unread]
        if max(real) - min(real) > 1:  # grouped batches trained positions out of the order's
            left = sorted(p for u in unread for p in u if p < n)  # order: deal them out again
            unread = [left[r::world] for r in range(world)]
        keep = min(len(u) for u in unread)
        kept = [evened(u, keep, n) for u in unread]
        planned = {index(p) for k in kept for p in k}
        left_out = sum(p not in trained and index(p) not in planned for p in range(n))
        mine = kept[rank]
        plan = [[index(p) for p in batch] for batch in self.batches_of(mine, self.batch_size,
                                                                      index)]  # fmt: skip
        self._start, self._plan = 0, plan
        return ResumedEpoch(
            batches_done=max(0, len(self) - len(plan)),  # type: ignore[arg-type]
            batches_left=len(plan),
            images=n,
            images_trained=sum(p < n for p in trained),
            images_left_out=left_out,
        )

    def skip_pass(self) -> None:
        """Make the next pass yield no batch (a resumed epoch with none left at this layout)."""
        self._start, self._plan = 0, []

    def __iter__(self) -> Iterator[list[int]]:
        # Read when the first batch is asked for, not when the iterator is made: a worker
        # DataLoader iterator makes one, drops it and makes another before reading.
        start, plan, self._start, self._plan = self._start, self._plan, 0, None
        if plan is not None:
            for batch in plan:
                yield seeded_indices(batch, self.sampler)
            return
        for batch in itertools.islice(self.batches(), start, None):
            yield seeded_indices(batch, self.sampler)


class ResumableBatchSampler(ResumableBatches, BatchSampler):
    """``BatchSampler`` (consecutive chunks of ``sampler``'s order) with :meth:`start_at`."""

    def batches(self) -> Iterator[list[int]]:
        return BatchSampler.__iter__(self)
