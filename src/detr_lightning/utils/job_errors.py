"""Entry points end an :class:`~detr_lightning.errors.ExplainedError` with its message alone and
exit status 1, instead of Hydra's report of the error under a traceback through Lightning (40
lines for a bad image found in a batch). ``HYDRA_FULL_ERROR=1`` raises it as before, with the
whole traceback. In a sweep (``-m``) the job fails and the next one runs, as Hydra does for any
error: the message is logged, and Hydra names the failed job at the end of the sweep under a
short :class:`JobFailed` (exit status 1). Import-light: no torch or Lightning.

A component's own check of its arguments (``HungarianMatcher`` with every cost 0, a
``SetCriterion`` loss name it does not know) raises while Hydra instantiates it, and Hydra wraps it in an ``InstantiationException``
whose text holds the target and the config key: :func:`construction_error` gives it the same
one-line form, named by that key. Errors a component's code did not raise itself (a bug deeper
down, a library's) keep Hydra's report.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import traceback
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
        except Exception as err:
            message = explained(err) if isinstance(err, ExplainedError) else construction_error(err)
            if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            log.error("%s\n(HYDRA_FULL_ERROR=1 shows the traceback)", message)
            if _in_sweep():
                raise JobFailed(message) from None
            raise SystemExit(1) from None

    return task  # type: ignore[return-value]


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def construction_error(err: BaseException) -> str | None:
    """The one-line form of an error that a component of this package raised on its arguments
    while Hydra instantiated it: ``<type> in <key> (<target>): <message>`` and its notes; None
    for any other error (and for one raised by code outside this package)."""
    from hydra.errors import InstantiationException

    wrapper = None
    while isinstance(err, InstantiationException) and err.__cause__ is not None:
        wrapper, err = err, err.__cause__  # nested instantiate calls: the innermost names it
    if wrapper is None or not isinstance(err, ExplainedError | ValueError):
        return None
    raised_in = traceback.extract_tb(err.__traceback__)[-1].filename if err.__traceback__ else ""
    if not isinstance(err, ExplainedError) and not raised_in.startswith(_PACKAGE_DIR):
        return None
    target = re.search(r"target '([^']+)'", str(wrapper))
    key = re.search(r"^full_key: (\S+)$", str(wrapper), re.MULTILINE)
    where = (key.group(1) if key else "the config") + (f" ({target.group(1)})" if target else "")
    return explained(err).replace(": ", f" in {where}: ", 1)


def _in_sweep() -> bool:
    """Whether this process runs a job of a Hydra multirun (its other jobs are still to run)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
