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

A checkpoint written mid-epoch (every ``n`` steps, SIGTERM) holds Lightning's count of the
interrupted epoch's batches; when the resumed epoch starts, the training batch sampler is set to
begin after them (:mod:`detr_lightning.data.resumable_batches`), so the remaining batches are the
ones the uninterrupted run trained on next. The position is a count of batches, as Lightning's:
resumed with other settings (devices, ``data.batch_size``, under ``resume_recipe=config``) it
skips as many batches of the new size, not the same images. A loader whose batch sampler cannot
(one a user's datamodule made) restarts that epoch's order, with a warning.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L
from lightning.fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import DataLoader

from detr_lightning.checkpointing.rng_states import derive_seed
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

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.batch_progress")
        if progress and "epoch" in checkpoint:
            # batches whose training step ran: what Lightning counts as done when it resumes
            self._saved_at = (int(checkpoint["epoch"]), int(progress["current"]["processed"]))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning (2.6) does not call on_train_epoch_start for an epoch it resumes part-way,
        # and sets the samplers' epoch only after this hook.
        if trainer.fit_loop.restarted_mid_epoch:
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
        done = self._batches_done(epoch, trainer.num_training_batches)
        if done and not self._start_at(loader, done, epoch):
            done = 0
        if (loader.num_workers > 0 and epoch > 0) or done:
            fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
            if fetcher is None:  # a Lightning without it: the resumed epoch keeps epoch 0's order
                log.warning("Resumed epoch %d: its data order could not be restored.", epoch)
                return
            iter(fetcher)  # Lightning reuses this iterator for the resumed epoch

    def _batches_done(self, epoch: int, total: float) -> int:
        """How many of ``epoch``'s ``total`` batches the checkpoint's run trained on; 0 when it
        trained none or all of them (ended an earlier epoch, or was stopped in the epoch-end
        validation): then no batch of this epoch is read, and the start would stay for the next
        epoch's pass."""
        saved, self._saved_at = self._saved_at, None
        if saved is None or saved[0] != epoch or saved[1] >= total:
            return 0
        return saved[1]

    @staticmethod
    def _start_at(loader: DataLoader, done: int, epoch: int) -> bool:
        """Set the loader's next pass to begin at batch ``done``; False if it cannot."""
        batches = loader.batch_sampler
        if not isinstance(batches, ResumableBatches):
            log.warning(
                "Resumed mid-epoch %d after %d batches: the training loader's batch sampler (%s) "
                "cannot start part-way, so the epoch's remaining batches restart its order",
                epoch, done, type(batches).__name__,
            )  # fmt: skip
            return False
        batches.start_at(done)
        log.info("Resumed mid-epoch %d: its order continues at batch %d", epoch, done)
        # Lightning warns of a mid-epoch resume unless the loader has a state_dict of its own;
        # its position is restored here instead.
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended "
                                "before the epoch ended")  # fmt: skip
        return True
