"""What a training run stopped by SIGTERM (pre-emption, ``scancel``, ``docker stop``) or a first
Ctrl-C, or by a bad file found while fitting, says and returns. Lightning turns the signal into
``SIGTERMException`` at the next batch boundary, a ``SystemExit`` without a code: the run would
end with status 0 and no word, as if it had finished. ``BestAndLastCheckpoint.on_exception`` has
written ``last.ckpt`` at that step by then (under DDP every rank stops after the same batch:
``sigterm_agreement.py``).
"""

from __future__ import annotations

import logging
from typing import NoReturn

import lightning as L

log = logging.getLogger(__name__)

EXIT_SIGTERM = 143  # 128 + SIGTERM, what a shell reports for a process the signal ended
EXIT_CTRL_C = 130  # 128 + SIGINT


def stop_signal(trainer: L.Trainer) -> tuple[str, int]:
    """What stopped the run at a batch end ("SIGTERM" or "Ctrl-C", as the ranks agreed:
    ``sigterm_agreement.py``) and the exit status that says so."""
    from detr_lightning.checkpointing.sigterm_agreement import SigtermAgreement

    agreements = [c for c in trainer.callbacks if isinstance(c, SigtermAgreement)]
    if agreements and agreements[0].stopped_by == "Ctrl-C":
        return "Ctrl-C", EXIT_CTRL_C
    return "SIGTERM", EXIT_SIGTERM


def resume_hint(trainer: L.Trainer) -> str:
    """How to continue: ``ckpt_path=last``, or in a sweep the sweep command with its folder; the
    same command where this run wrote no checkpoint (``last`` would take another run's)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"rerun the sweep command with ckpt_path=auto hydra.sweep.dir={HydraConfig.get().sweep.dir}"
    if getattr(trainer.checkpoint_callback, "last_written_step", None) is None:
        return "rerun the same command (not with ckpt_path=last: that is another run's)"
    return "rerun the command with ckpt_path=last"


def saved_checkpoint(trainer: L.Trainer) -> str:
    """Where this run's last.ckpt is and its step, or that the run wrote none."""
    callback = trainer.checkpoint_callback
    step = getattr(callback, "last_written_step", None)
    path = getattr(callback, "last_model_path", "") or ""
    if step is not None and path:
        return f"last.ckpt (global step {step}) is {path}"
    return "no checkpoint was written by this run"


def fit_phase(trainer: L.Trainer) -> str:
    """Where fitting stopped: "the sanity check", "validation" or "training" (what the checkpoint
    callback saw when the exception reached it)."""
    return getattr(trainer.checkpoint_callback, "stopped_in", None) or "training"


def exit_stopped_training(trainer: L.Trainer, during: str) -> NoReturn:
    """Name the signal, the step, the checkpoint a resume continues from and how; exit with
    status 143 (SIGTERM) or 130 (Ctrl-C)."""
    name, status = stop_signal(trainer)
    if trainer.is_global_zero:
        log.error(
            "%s: training stopped during %s at global step %d (epoch %d); %s. To resume, %s.",
            name, during, trainer.global_step, trainer.current_epoch, saved_checkpoint(trainer),
            resume_hint(trainer),
        )  # fmt: skip
    raise SystemExit(status)


def note_data_error(err: BaseException, trainer: L.Trainer) -> None:
    """Add to a data error found while fitting (an image or panoptic PNG read only in its batch)
    where training stopped, the checkpoint ``BestAndLastCheckpoint.on_exception`` wrote, and how
    to go on once the file is fixed."""
    err.add_note(
        f"Training stopped at global step {trainer.global_step} (epoch {trainer.current_epoch}); "
        f"{saved_checkpoint(trainer)}. Once the file is fixed (or its record removed from the "
        f"json), {resume_hint(trainer)} to go on from there."
    )


def exit_stopped_evaluation(trainer: L.Trainer) -> NoReturn:
    """An evaluation (``eval``) stopped by SIGTERM or Ctrl-C: say that it wrote no metrics and
    exit with status 143 or 130 (Lightning's ``SIGTERMException`` would end it with 0, as if it
    had finished)."""
    name, status = stop_signal(trainer)
    if trainer.is_global_zero:
        log.error("%s: evaluation stopped before its end; no metrics.json was written. "
                  "To evaluate, rerun the command.", name)  # fmt: skip
    raise SystemExit(status)
