"""Where the first epoch of a resumed fit goes on when its checkpoint was written mid-epoch
(every ``n`` steps, SIGTERM, Ctrl-C): the training batch sampler's next pass and Lightning's count
of the epoch's batches, set by :func:`go_on`, which
:class:`~detr_lightning.data.epoch_streams.EpochStreams` calls when that epoch starts.

With the run's layout (batch size, processes, grouping) the pass starts at the checkpoint's count
of batches (:func:`_start_at`). With another one it goes on at the first image of the epoch's
order the run had not reached, at the new size, and the count is set to the new layout's
equivalent (:func:`_resume_after`, the plan in :mod:`detr_lightning.data.batch_layout`). Where no
batch of the epoch is left, or the count is at or past ``trainer.limit_train_batches`` already (a
lowered limit, either layout: :func:`_past_the_limit`), the epoch ends at once, without its
validation: the count is set one short of the epoch's and the pass is empty, since at the
epoch's own count or past it Lightning would take the epoch as not begun and train it again.
"""

from __future__ import annotations

import logging
import warnings

import lightning as L
from torch.utils.data import DataLoader

from detr_lightning.data.batch_layout import BatchLayout, resume_note
from detr_lightning.data.resumable_batches import ResumableBatches

log = logging.getLogger(__name__)


def go_on(
    trainer: L.Trainer,
    loader: DataLoader,
    done: int,
    before: BatchLayout | None,
    now: BatchLayout | None,
    epoch: int,
) -> int:
    """Set the resumed epoch ``epoch`` to go on after the ``done`` (> 0) batches the
    checkpoint's run trained of it, in layout ``before`` (None: not recorded); ``now`` is this
    run's. Returns Lightning's count of the epoch's batches from which it goes on (0: the pass
    is whole, nothing planned)."""
    moved = None
    if before is not None and now is not None and before != now:
        moved = _resume_after(trainer, loader, done, before, epoch)
    if moved is None and done > trainer.num_training_batches:
        moved = _past_the_limit(trainer, loader, done, epoch)
    if moved is not None:
        return moved
    # the same layout, or another whose batches cannot be replayed
    count = _batches_done(done, trainer.num_training_batches)
    return count if count and _start_at(loader, count, epoch) else 0


def _batches_done(done: int, total: float) -> int:
    """``done`` batches of the epoch's ``total`` trained by the checkpoint's run (of this
    run's layout); 0 when it trained all of them (was stopped in the epoch-end validation):
    then no batch of this epoch is read, and the start would stay for the next epoch's
    pass."""
    return 0 if done >= total else done


def _resume_after(
    trainer: L.Trainer, loader: DataLoader, done: int, before: BatchLayout, epoch: int
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
    if trainer.is_global_zero:  # the run's counts, the same on every rank: said once
        level, message, args = resume_note(plan, total, trainer.accumulate_grad_batches)
        log.log(level, "Resumed mid-epoch %d with another batch layout (the run: %s, %d "
                "batches done; now: %s): " + message, epoch, before, done, batches.layout(),
                *args)  # fmt: skip
    if plan.batches_done >= total:  # no batch of it left here, or past the limit
        return _end_at_once(trainer, batches, done, total)
    count_as_done(trainer, done, plan.batches_done)
    _ignore_lightning_resume_warning()
    return max(1, plan.batches_done)  # the pass is planned: the iterator is remade


def _past_the_limit(trainer: L.Trainer, loader: DataLoader, done: int, epoch: int) -> int | None:
    """The run trained ``done`` batches of the epoch, more than a lowered
    ``trainer.limit_train_batches`` lets it have now: it ends at once, without its
    validation, as at another layout (past its count Lightning took the epoch as not begun
    and trained it again). None where the loader cannot skip its pass."""
    batches, total = loader.batch_sampler, int(trainer.num_training_batches)
    if not isinstance(batches, ResumableBatches):
        return None
    if trainer.is_global_zero:
        log.info("Resumed mid-epoch %d after %d batches, past the %d that "
                 "trainer.limit_train_batches gives it now: it ends here, without its "
                 "validation", epoch, done, total)  # fmt: skip
    return _end_at_once(trainer, batches, done, total)


def _end_at_once(trainer: L.Trainer, batches: ResumableBatches, done: int, total: int) -> int:
    """End the resumed epoch before its first batch: Lightning's count one short of its
    ``total`` and an empty pass (at ``total`` or past it Lightning would take the epoch as not
    begun and run it again). Returns the count (at least 1: the pass is planned, the iterator
    is remade)."""
    count_as_done(trainer, done, total - 1)
    batches.skip_pass()
    _ignore_lightning_resume_warning()
    return max(1, total - 1)


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


def count_as_done(trainer: L.Trainer, saved: int, now: int) -> None:
    """Lightning's count of the resumed epoch's batches (restored as ``saved``, the interrupted
    run's) set to ``now``, before the epoch loop reads it: its epoch ends when the count reaches
    the epoch's batches (and its loader's ``fetched`` starts from it)."""
    progress = trainer.fit_loop.epoch_loop.batch_progress.current
    for name in ("ready", "started", "processed", "completed"):
        setattr(progress, name, getattr(progress, name) + now - saved)
