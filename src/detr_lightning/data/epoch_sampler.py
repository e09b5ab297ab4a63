"""A training order that is a function of the seed and the epoch, so that a resumed run goes on.

``DataLoader(shuffle=True)`` draws each epoch's permutation from the global random state, which
``seed_everything`` resets at every start: a run resumed after epoch 3 trained its epoch 4 on
epoch 0's order, and a job pre-empted again and again saw the same leading images each time.
:class:`EpochRandomSampler` draws epoch ``e``'s permutation from its own generator seeded with
``seed + e`` (Lightning calls ``set_epoch`` at every epoch start, resumed or not; with worker
processes the resumed epoch's iterator is remade after it, ``data/epoch_streams.py``), and leaves
the global random state to the model. Under DDP Lightning replaces it by a ``DistributedSampler``,
which already orders by seed and epoch. A run resumed mid-epoch goes on at the next batch of that
epoch's order (``data/resumable_batches.py``; Lightning itself would restart the order).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, RandomSampler


class EpochRandomSampler(RandomSampler):
    """Each index of ``data_source`` once per epoch, in the order of ``randperm`` seeded with
    ``seed + epoch``. ``seed`` and ``epoch`` also seed each sample's augmentation
    (:mod:`detr_lightning.data.sample_seeds`)."""

    def __init__(self, data_source: Dataset, seed: int) -> None:
        super().__init__(data_source, generator=torch.Generator())
        self.seed = int(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch``'s order (called by Lightning)."""
        self.epoch = int(epoch)
        self.generator.manual_seed((self.seed + int(epoch)) % 2**64)
