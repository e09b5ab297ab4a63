"""BestAndLastCheckpoint: the best checkpoints by a metric, plus a ``last.ckpt`` that always holds
the latest training state.

Stock ``ModelCheckpoint`` (Lightning 2.6) ties the two together: ``last.ckpt`` is rewritten only
when a top-k file is, so once val/AP stops improving it goes stale, and ``every_n_train_steps``
saves are deferred until the monitored metric exists (i.e. dropped before the first validation)
unless ``save_on_train_epoch_end=False``. A crash then loses everything since the last
improvement. Here they are independent:

* top-k by ``monitor`` is decided at every validation end (``every_n_epochs``), as before;
* ``last.ckpt`` is written at the end of every training epoch, every ``every_n_train_steps``
  optimizer steps (from the first step on, metric or not) and when training ends.

``best_model_path``, ``best_model_score`` and ``last_model_path`` keep their Lightning meaning
(train.py tests ``best_model_path``; the non-finite guard names ``last_model_path``). A resume
into another folder keeps the earlier run's best files as the top-k (the parent forgets them).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from detr_lightning.data.errors import DatasetFormatError, ImageLoadError

log = logging.getLogger(__name__)


def _number(score: Any) -> str:
    return f"{float(score):.4f}" if score is not None else "?"


class BestAndLastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose ``last.ckpt`` is refreshed independently of the monitored metric.

    Args:
        every_n_train_steps: also rewrite ``last.ckpt`` every that many optimizer steps (None/0:
            only at epoch ends). It does not trigger top-k saves: the metric only changes at
            validation.
        save_last: must stay truthy (the point of this class); "link" is not supported.
        **kwargs: the other ``ModelCheckpoint`` arguments (dirpath, filename, monitor, mode,
            save_top_k, every_n_epochs, ...).
    """

    def __init__(
        self, every_n_train_steps: int | None = None, save_last: bool = True, **kwargs: Any
    ) -> None:
        if save_last is not True:
            raise ValueError(
                f"BestAndLastCheckpoint(save_last={save_last!r}): this callback exists to keep "
                "last.ckpt current; use lightning's ModelCheckpoint to go without it"
            )
        if every_n_train_steps is not None and every_n_train_steps < 0:
            raise ValueError(
                f"callbacks.model_checkpoint.every_n_train_steps={every_n_train_steps}: must be "
                ">= 1 (or null for epoch ends only)"
            )
        for key in ("train_time_interval", "save_on_train_epoch_end"):
            if kwargs.get(key) is not None:
                raise ValueError(f"BestAndLastCheckpoint does not take {key}")
        # The parent would turn every_n_train_steps into a top-k trigger (and make it exclusive
        # with every_n_epochs); it is a last.ckpt trigger here.
        super().__init__(save_last=True, **kwargs)
        self.last_every_n_train_steps = int(every_n_train_steps or 0)
        self._last_written_step = -1  # global step held by the current last.ckpt (this run)
        self.stopped_in: str | None = None  # "training", "validation", "the sanity check"

    # ------------------------------------------------------------------ when
    @staticmethod
    def _not_fitting(trainer: L.Trainer) -> bool:
        return (
            bool(trainer.fast_dev_run)
            or trainer.state.fn != TrainerFn.FITTING
            or trainer.sanity_checking
        )

    @override
    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        if self.writes_last_after_batch(trainer):
            self.write_last(trainer)

    def writes_last_after_batch(self, trainer: L.Trainer) -> bool:
        """Whether this training batch's end writes ``last.ckpt`` (every n steps; the same answer
        on every DDP rank)."""
        n = self.last_every_n_train_steps
        if n < 1 or trainer.global_step % n != 0 or trainer.global_step == self._last_written_step:
            return False
        # The epoch end writes moments later (with the validation results): no need to write twice.
        return not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch

    @override
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._not_fitting(trainer) or self.save_top_k == 0 or self._every_n_epochs < 1:
            return
        if (trainer.current_epoch + 1) % self._every_n_epochs == 0:
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    @override
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Always, even at a step already written mid-epoch: the epoch-end state (finished epoch,
        # validation results, best score) is what a resume should continue from.
        self.write_last(trainer)

    @override
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._last_written_step:
            self.write_last(trainer)

    @override
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._fitting = stage == "fit"

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # eval / predict of a run's checkpoint: that run's top-k bookkeeping (paths in its own
        # folder) means nothing to a run that writes no checkpoints, and the parent would warn
        # on every evaluation that the folder changed.
        if not getattr(self, "_fitting", True):
            return
        earlier = state_dict.get("dirpath")
        if earlier is None or self.dirpath is None or Path(earlier) == Path(self.dirpath):
            super().load_state_dict(state_dict)  # then without the files that are gone since
        # else a resume into a new run folder: the parent would forget the run's best so far
        self._keep_earlier_best(state_dict)

    def _keep_earlier_best(self, state_dict: dict[str, Any]) -> None:
        """Adopt the top-k files of the run resumed from that still exist, so that "best"
        (train.py's final test) is the run's best, not the best since the resume, and never a
        file deleted since (a sweep job resumed in its own folder). In another folder they can
        leave the top-k list but are never deleted: the parent only removes files under its own
        dirpath (``_should_remove_checkpoint``)."""
        saved = {str(p): s for p, s in (state_dict.get("best_k_models") or {}).items()}
        for path in [p for p in saved if not os.path.isfile(p)]:
            log.warning(
                "the best %s so far (%s) comes from %s, which no longer exists: the final test "
                "uses the best checkpoint that still exists (or this run's last.ckpt)",
                self.monitor, _number(saved.pop(path)), path,
            )  # fmt: skip
        best_first = sorted(saved, key=lambda p: float(saved[p]), reverse=self.mode == "max")
        if self.save_top_k > 0:
            best_first = best_first[: self.save_top_k]
        self.best_k_models = {p: saved[p] for p in best_first}
        self.best_model_path = best_first[0] if best_first else ""
        self.best_model_score = saved[best_first[0]] if best_first else None
        if best_first and (self.save_top_k < 0 or len(best_first) == self.save_top_k):
            self.kth_best_model_path, self.kth_value = best_first[-1], saved[best_first[-1]]
        if best_first:
            log.info("resumed from %s: best %s so far %s (%s)", state_dict.get("dirpath"),
                     self.monitor, _number(self.best_model_score), self.best_model_path)  # fmt: skip

    @override
    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        # SIGTERM (pre-emption, scancel) stops at a batch boundary, and a bad image or panoptic
        # PNG fails while its batch is read, before its step: the state is consistent at the
        # last step. Without this the resume loses everything since the last save.
        self.stopped_in = ("the sanity check" if trainer.sanity_checking
                           else "validation" if trainer.validating else "training")  # fmt: skip
        stops_cleanly: tuple[type[BaseException], ...] = (SIGTERMException,)
        if trainer.world_size == 1:
            # A bad file fails on the one rank that reads it, while the others are inside the
            # step's collectives: a save there (Lightning's barrier) waits on them for ever.
            # Under DDP the rank exits and the others fail with it; last.ckpt stays the last
            # periodic or epoch-end one. SIGTERM stops every rank after the same batch
            # (sigterm_agreement.py).
            stops_cleanly = (SIGTERMException, ImageLoadError, DatasetFormatError)
        if isinstance(exception, stops_cleanly) and trainer.global_step != self._last_written_step:
            self.write_last(trainer)

    # ------------------------------------------------------------------ what
    def write_last(self, trainer: L.Trainer) -> None:
        """Write ``last.ckpt`` now (a no-op outside fitting and before the first step)."""
        if self._not_fitting(trainer) or trainer.global_step == 0:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        self._last_written_step = trainer.global_step

    @property
    def last_written_step(self) -> int | None:
        """Global step of the ``last.ckpt`` this run wrote (None: not written yet)."""
        return self._last_written_step if self._last_written_step >= 0 else None
