"""Entry points end an :class:`~detr_lightning.errors.ExplainedError` with its message alone and
exit status 1, instead of Hydra's report of the error under a traceback through Lightning (40
lines for a bad image found in a batch). ``HYDRA_FULL_ERROR=1`` raises it as before, with the
whole traceback. In a sweep (``-m``) the job fails and the next one runs, as Hydra does for any
error: the message is logged, and Hydra names the failed job at the end of the sweep under a
short :class:`JobFailed` (exit status 1). Import-light: no torch or Lightning.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

from detr_lightning.errors import ExplainedError

log = logging.getLogger(__name__)

Main = TypeVar("Main", bound=Callable[..., Any])


class JobFailed(Exception):
    """A sweep job that ended with an explained error (its message); Hydra reports it after the
    sweep's other jobs ran."""


def explained(err: BaseException) -> str:
    """``<type>: <message>``, then the notes added on the way up (what a resume needs)."""
    return "\n".join([f"{type(err).__name__}: {err}", *getattr(err, "__notes__", [])])


def exit_on_explained_errors(main: Main) -> Main:
    """Wrap a Hydra task function (under ``@hydra.main``): an ExplainedError is logged (console
    and the job's log file) and ends the process with status 1."""

    @functools.wraps(main)
    def task(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except ExplainedError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            log.error("%s\n(HYDRA_FULL_ERROR=1 shows the traceback)", explained(err))
            if _in_sweep():
                raise JobFailed(explained(err)) from None
            raise SystemExit(1) from None

    return task  # type: ignore[return-value]


def _in_sweep() -> bool:
    """Whether this process runs a job of a Hydra multirun (its other jobs are still to run)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
