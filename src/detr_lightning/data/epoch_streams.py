"""The training data of epoch ``e`` as a function of the seed and ``e``, with worker processes
too, so that a run resumed at an epoch end reads what the uninterrupted run read.

Two things made a resumed epoch differ when ``data.num_workers > 0``:

- **The order.** Lightning makes the training iterator once before the first epoch (its
  ``estimated_stepping_batches`` sets up the data before the checkpoint is restored) and sets
  the sampler's epoch only after that. Without workers the sampler is read lazily, after
  ``set_epoch``; a worker iterator reads its first indices as it is made, so the resumed
  epoch ran in epoch 0's order (:class:`~detr_lightning.data.epoch_sampler.EpochRandomSampler`
  or, under DDP, Lightning's ``DistributedSampler``).
- **The workers' seeds.** Every epoch's workers are seeded from a base seed that the iterator
  draws from the training loader's own generator (``data/loaders.py``): epoch ``e`` drew the
  ``e + 1``-th number of it, a resumed process its first. The samples' augmentation no longer
  draws from them (each sample's draws are seeded from ``(seed, epoch, index)``:
  ``data/sample_seeds.py``, which also covers persistent workers, made once per process with
  generators no checkpoint holds); what a collate function draws in a worker still does.

:class:`EpochStreams` seeds that generator with ``(seed, epoch)`` when each training epoch
starts, before Lightning makes the epoch's iterator, and in the first epoch of a resumed fit
remakes the iterator that was made before the restore.

A checkpoint written mid-epoch (every ``n`` steps, SIGTERM, Ctrl-C) holds Lightning's count of
the interrupted epoch's batches, and (:meth:`EpochStreams.state_dict`) the run's
:class:`~detr_lightning.data.batch_layout.BatchLayout`: batch size, number of processes,
grouping. When the resumed epoch starts, the training batch sampler is set to go on where the
interrupted run stopped (:mod:`detr_lightning.data.mid_epoch_position`), so the remaining batches
are the ones the uninterrupted run trained on next: at that count of batches with the same
layout; with another one (``data.batch_size`` changed, another number of DDP processes) at the
first image of the epoch's order the run had not reached, the count set to the new layout's
equivalent so that the epoch ends after its last image. A checkpoint written before the layout
was recorded resumes at that count of batches of whatever size the loader has now. A loader whose
batch sampler cannot start part-way (one a user's datamodule made) restarts that epoch's order,
with a warning.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from lightning.fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import DataLoader

from detr_lightning.checkpointing.rng_states import derive_seed
from detr_lightning.data.batch_layout import BatchLayout
from detr_lightning.data.mid_epoch_position import count_as_done, go_on
from detr_lightning.data.resumable_batches import ResumableBatches

log = logging.getLogger(__name__)


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s worker seeds in a run seeded ``seed``."""
    return derive_seed(int(seed) % 2**32, epoch)


class EpochStreams(L.Callback):
    """At each training epoch start: the training loader's generator seeded with
    :func:`epoch_seed` ``(seed, epoch)``; in a resumed fit's first epoch, the iterator remade
    (in the sampler's resumed epoch, with that epoch's worker seeds, after the batches a
    mid-epoch checkpoint's run had trained on).

    Args:
        seed: the run's seed (``cfg.seed``).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._started = False
        self._saved_at: tuple[int, int] | None = None  # (epoch, its batches done) in the checkpoint
        self._saved_layout: BatchLayout | None = None  # the checkpoint's run's batches
        self._layout: BatchLayout | None = None  # this run's, saved in its checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {"layout": self._layout.as_dict()} if self._layout else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._saved_layout = BatchLayout.from_dict(state_dict.get("layout"))

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
        if progress and "epoch" in checkpoint:
            # batches whose training step ran: what Lightning counts as done when it resumes
            self._saved_at = (int(checkpoint["epoch"]), int(progress["current"]["processed"]))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batches = getattr(trainer.train_dataloader, "batch_sampler", None)
        if isinstance(batches, ResumableBatches):
            self._layout = batches.layout()
        # Lightning (2.6) does not call on_train_epoch_start for an epoch it resumes part-way,
        # and sets the samplers' epoch only after this hook.
        if trainer.fit_loop.restarted_mid_epoch:
            self._ended_at_its_last_batch(trainer)
            _set_sampler_epoch(trainer.train_dataloader, trainer.current_epoch)
            self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        epoch = trainer.current_epoch
        if isinstance(loader, DataLoader) and loader.generator is not None:
            loader.generator.manual_seed(epoch_seed(self.seed, epoch))
        first, self._started = not self._started, True
        if not (first and isinstance(loader, DataLoader)):
            return
        saved, self._saved_at = self._saved_at, None
        done = 0
        if saved is not None and saved[0] == epoch and saved[1]:
            done = go_on(trainer, loader, saved[1], self._saved_layout, self._layout, epoch)
        if (loader.num_workers > 0 and epoch > 0) or done:
            fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
            if fetcher is None:  # a Lightning without it: the resumed epoch keeps epoch 0's order
                log.warning("Resumed epoch %d: its data order could not be restored.", epoch)
                return
            iter(fetcher)  # Lightning reuses this iterator for the resumed epoch

    def _ended_at_its_last_batch(self, trainer: L.Trainer) -> None:
        """A checkpoint written at its epoch's last batch (every ``n`` steps or a stop landing
        there): Lightning starts the next epoch but keeps the count of batches, and clears it
        only if it reaches this run's batches per epoch. With as many batches per epoch (the
        same layout) it does; with more (a smaller ``data.batch_size``, fewer processes) the next
        epoch went on at that count, training only its first batches. Set the count to this
        run's epoch's, as it would be with the same layout."""
        saved = self._saved_at
        total = trainer.num_training_batches
        if saved is None or saved[0] + 1 != trainer.current_epoch or total == float("inf"):
            return
        self._saved_at = None
        if saved[1] != total:
            count_as_done(trainer, saved[1], int(total))
            log.info("Resumed after the last batch of epoch %d: epoch %d starts at its first "
                     "batch", saved[0], trainer.current_epoch)  # fmt: skip
