"""The training data of epoch ``e`` as a function of the seed and ``e``, with worker processes
too, so that a run resumed at an epoch end reads what the uninterrupted run read.

Two things made a resumed epoch differ when ``data.num_workers > 0``:

- **The order.** Lightning makes the training iterator once before the first epoch (its
  ``estimated_stepping_batches`` sets up the data before the checkpoint is restored) and sets
  the sampler's epoch only after that. Without workers the sampler is read lazily, after
  ``set_epoch``; a worker iterator reads its first indices as it is made, so the resumed
  epoch ran in epoch 0's order (:class:`~detr_lightning.data.epoch_sampler.EpochRandomSampler`
  or, under DDP, Lightning's ``DistributedSampler``).
- **The augmentation.** Every epoch's workers are seeded from a base seed that the iterator
  draws from the training loader's own generator (``data/loaders.py``): epoch ``e`` drew the
  ``e + 1``-th number of it, a resumed process its first.

:class:`EpochStreams` seeds that generator with ``(seed, epoch)`` when each training epoch
starts, before Lightning makes the epoch's iterator, and in the first epoch of a resumed fit
remakes the iterator that was made before the restore. Persistent workers are made once per
process and keep their own generators, which no checkpoint holds: with
``data.persistent_workers=true`` the order is right, the augmentation draws after a resume
differ (statistically equal). A checkpoint written mid-epoch restarts that epoch's order.
"""

from __future__ import annotations

import logging

import lightning as L
from torch.utils.data import DataLoader

from detr_lightning.checkpointing.rng_states import derive_seed

log = logging.getLogger(__name__)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s worker seeds in a run seeded ``seed``."""
    return derive_seed(int(seed) % 2**32, epoch)


class EpochStreams(L.Callback):
    """At each training epoch start: the training loader's generator seeded with
    :func:`epoch_seed` ``(seed, epoch)``; in a resumed fit's first epoch, the iterator remade
    (in the sampler's resumed epoch, with that epoch's worker seeds).

    Args:
        seed: the run's seed (``cfg.seed``).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._started = False

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        epoch = trainer.current_epoch
        if isinstance(loader, DataLoader) and loader.generator is not None:
            loader.generator.manual_seed(epoch_seed(self.seed, epoch))
        first, self._started = not self._started, True
        if first and epoch > 0 and isinstance(loader, DataLoader) and loader.num_workers > 0:
            fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
            if fetcher is None:  # a Lightning without it: the resumed epoch keeps epoch 0's order
                log.warning("Resumed epoch %d: its data order could not be restored.", epoch)
                return
            iter(fetcher)  # Lightning reuses this iterator for the resumed epoch
