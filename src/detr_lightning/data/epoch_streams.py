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
:class:`~detr_lightning.data.resumable_batches.BatchLayout`: batch size, number of processes,
grouping. When the resumed epoch starts, the training batch sampler is set to go on where the
interrupted run stopped (:mod:`detr_lightning.data.resumable_batches`), so the remaining batches
are the ones the uninterrupted run trained on next. With the same layout the position is that
count of batches. With another one (``data.batch_size`` changed, a noted setting, or under
``resume_recipe=config``; another number of DDP processes) it is the images that count covered
(batches x old batch size x old processes): the epoch goes on at the first image the run had
not reached, at the new size, and Lightning's count of the epoch's batches is set to the new
layout's equivalent so that the epoch ends after its last image; under DDP up to ``processes -
1`` images of the epoch can be left out (a warning counts them), and where no batch of it is
left at the new layout, or that count reaches ``trainer.limit_train_batches`` already, it ends at
once, without its validation (before, Lightning took that count as an epoch over before it
started, and trained it again whole). The log line counts the batches that run (before, under a
limit, the planned ones: 8 where the limit let 3 run). Before, the count was
taken as batches of the new size, which skipped other images than the run had trained (some
twice, some never). A checkpoint written before the layout was recorded resumes as it did, at
that count of batches of whatever size the loader has now. A loader whose batch sampler cannot
start part-way (one a user's datamodule made) restarts that epoch's order, with a warning.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L
from lightning.fabric.utilities.data import _set_sampler_epoch
from torch.utils.data import DataLoader

from detr_lightning.checkpointing.rng_states import derive_seed
from detr_lightning.data.batch_layout import BatchLayout, resume_note
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
        before, now = self._saved_layout, self._layout
        done: int | None = None
        if saved is None or saved[0] != epoch or saved[1] == 0:
            done = 0
        elif before is not None and now is not None and before != now:
            done = self._resume_after(trainer, loader, saved[1], before, epoch)
        if done is None:  # the same layout, or another whose batches cannot be replayed
            done = self._batches_done(saved[1], trainer.num_training_batches)
            if done and not self._start_at(loader, done, epoch):
                done = 0
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
            _count_as_done(trainer, saved[1], int(total))
            log.info("Resumed after the last batch of epoch %d: epoch %d starts at its first "
                     "batch", saved[0], trainer.current_epoch)  # fmt: skip

    @staticmethod
    def _batches_done(done: int, total: float) -> int:
        """``done`` batches of the epoch's ``total`` trained by the checkpoint's run (of this
        run's layout); 0 when it trained all of them (was stopped in the epoch-end validation):
        then no batch of this epoch is read, and the start would stay for the next epoch's
        pass."""
        return 0 if done >= total else done

    def _resume_after(
        self, trainer: L.Trainer, loader: DataLoader, done: int, before: BatchLayout, epoch: int
    ) -> int | None:
        """Set the loader's next pass to go on at the first image that ``done`` batches of
        layout ``before`` had not reached, and Lightning's count of the epoch's batches to the
        new layout's equivalent; returns that count (at least 1: the pass is planned, even an
        empty one), or None where the run's batches cannot be replayed (the caller then starts
        at the batch count, as for the same layout)."""
        batches = loader.batch_sampler
        assert isinstance(batches, ResumableBatches)  # the layout was read from it
        plan = batches.resume_after(done, before)
        if plan is None:
            log.warning(
                "Resumed mid-epoch %d after %d batches of %s, now %s: the interrupted run's "
                "batches cannot be replayed here, so the epoch goes on at batch %d of the new "
                "size, which skips other images than the run had trained",
                epoch, done, before, batches.layout(), done,
            )  # fmt: skip
            return None
        total = int(trainer.num_training_batches)  # under trainer.limit_train_batches
        ended = plan.batches_done >= total  # no batch of it left here, or past the limit
        # Ended: one batch short of the epoch's, and an empty pass. At its count Lightning would
        # take the epoch as over before it started and run it again from its first batch.
        now = total - 1 if ended else plan.batches_done
        _count_as_done(trainer, done, now)
        if ended:
            batches.skip_pass()
        if trainer.is_global_zero:  # the run's counts, the same on every rank: said once
            level, message, args = resume_note(plan, total, trainer.accumulate_grad_batches)
            log.log(level, "Resumed mid-epoch %d with another batch layout (the run: %s, %d "
                    "batches done; now: %s): " + message, epoch, before, done, batches.layout(),
                    *args)  # fmt: skip
        _ignore_lightning_resume_warning()
        return max(1, now)  # the pass is planned: the iterator is remade

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
        _ignore_lightning_resume_warning()
        return True


def _ignore_lightning_resume_warning() -> None:
    """Lightning warns of a mid-epoch resume unless the loader has a state_dict of its own; its
    position is restored here instead."""
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended "
                            "before the epoch ended")  # fmt: skip


def _count_as_done(trainer: L.Trainer, saved: int, now: int) -> None:
    """Lightning's count of the resumed epoch's batches (restored as ``saved``, the interrupted
    run's) set to ``now``, before the epoch loop reads it: its epoch ends when the count reaches
    the epoch's batches (and its loader's ``fetched`` starts from it)."""
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    for name in ("ready", "started", "processed", "completed"):
        setattr(progress, name, getattr(progress, name) + now - saved)
