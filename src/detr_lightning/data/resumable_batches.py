"""Batch samplers that can start their next pass part-way through an epoch, so that a run resumed
from a checkpoint written mid-epoch (``every_n_train_steps``, SIGTERM) trains on the batches the
interrupted epoch had not reached, in that epoch's order, instead of restarting the epoch.

Lightning restores the loop's batch count but not the loader's position: without more, the
resumed epoch draws its remaining batches from the start of the epoch's order, so the first
images of the epoch are trained on twice and the last ones not at all. The position is set by
``data/epoch_streams.py`` when the resumed epoch starts; the batches before it are skipped as
index lists (no image is read), and the pass after that one is whole again.

Both training batch samplers (:class:`ResumableBatchSampler`, and the aspect-ratio grouped one in
``data/sampler.py``) take the index sampler as their ``sampler`` argument, so under DDP Lightning
re-instantiates them around its ``DistributedSampler`` and each rank skips its own batches.
Each index they hand out carries the seed of its sample's augmentation
(:mod:`detr_lightning.data.sample_seeds`).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from torch.utils.data import BatchSampler, Sampler

from detr_lightning.data.sample_seeds import seeded_indices


class ResumableBatches:
    """A batch sampler mixin: :meth:`start_at` makes the next pass begin at a given batch.
    Subclasses yield the epoch's batches from :meth:`batches`; a pass hands them out as indices
    that carry their sample's seed (:func:`~detr_lightning.data.sample_seeds.seeded_indices`
    of ``sampler``, the index sampler)."""

    sampler: Sampler
    _start = 0

    def start_at(self, batch: int) -> None:
        """Make the next pass skip the epoch's first ``batch`` batches (``batch >= 0``)."""
        if batch < 0:
            raise ValueError(f"start_at({batch}): a batch position is >= 0")
        self._start = int(batch)

    def batches(self) -> Iterator[list[int]]:
        """The epoch's batches of dataset indices, from the first."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[list[int]]:
        # Read when the first batch is asked for, not when the iterator is made: a worker
        # DataLoader iterator makes one, drops it and makes another before reading.
        start, self._start = self._start, 0
        for batch in itertools.islice(self.batches(), start, None):
            yield seeded_indices(batch, self.sampler)


class ResumableBatchSampler(ResumableBatches, BatchSampler):
    """``BatchSampler`` (consecutive chunks of ``sampler``'s order) with :meth:`start_at`."""

    def batches(self) -> Iterator[list[int]]:
        return BatchSampler.__iter__(self)
