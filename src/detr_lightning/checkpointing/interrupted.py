"""What a training run stopped by SIGTERM (pre-emption, ``scancel``, ``docker stop``) says and
returns. Lightning turns the signal into ``SIGTERMException`` at the next batch boundary, a
``SystemExit`` without a code: the run would end with status 0 and no word, as if it had
finished. ``BestAndLastCheckpoint.on_exception`` has written ``last.ckpt`` at that step by then.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import lightning as L

log = logging.getLogger(__name__)

EXIT_SIGTERM = 143  # 128 + SIGTERM, what a shell reports for a process the signal ended


def resume_hint() -> str:
    """How to continue: ``ckpt_path=last``, or in a sweep the sweep command with its folder."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return f"rerun the sweep command with ckpt_path=auto hydra.sweep.dir={HydraConfig.get().sweep.dir}"
    return "rerun the command with ckpt_path=last"


def exit_on_sigterm(trainer: L.Trainer, during: str) -> NoReturn:
    """Name the step, the checkpoint a resume continues from and how; exit with status 143."""
    if trainer.is_global_zero:
        callback = trainer.checkpoint_callback
        step = getattr(callback, "last_written_step", None)
        path = getattr(callback, "last_model_path", "") or ""
        saved = (
            f"last.ckpt (global step {step}) is {path}"
            if step is not None and path
            else "no checkpoint was written by this run"
        )
        log.error(
            "SIGTERM: training stopped during %s at global step %d (epoch %d); %s. To resume, %s.",
            during, trainer.global_step, trainer.current_epoch, saved, resume_hint(),
        )  # fmt: skip
    raise SystemExit(EXIT_SIGTERM)
