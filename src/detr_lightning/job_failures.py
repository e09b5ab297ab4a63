"""A failed job's record in its run directory, ``failed.json``, for ``report`` to name it.

A sweep job that fails (a bad override value, a bug, a bad image) leaves no ``metrics.json``,
as a job still running does; Hydra names it in the console only. The entry points whose runs
``report`` lists, ``train`` and ``eval``, are wrapped in :func:`records_failures`: a job ending
with an exception writes ``failed.json`` with the error's type and message, and a job starting
removes a stale one (a resumed job). ``predict``, ``visualize`` and ``export`` write none: their
folders are no report rows, and a refused run leaves its folder as it was.
Import-light: no torch or Lightning.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from detr_lightning.utils.job_errors import explained

log = logging.getLogger(__name__)

FAILED = "failed.json"
Main = TypeVar("Main", bound=Callable[..., Any])


def job_dir() -> Path | None:
    """The running Hydra job's output folder; None outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return Path(HydraConfig.get().runtime.output_dir)


def clear_failure(run_dir: str | os.PathLike | None) -> None:
    """Remove an earlier attempt's ``failed.json`` from ``run_dir`` (a job starting anew)."""
    if run_dir is not None:
        Path(run_dir, FAILED).unlink(missing_ok=True)


def record_failure(run_dir: str | os.PathLike | None, error: str) -> None:
    """Write ``failed.json`` (``{"error": error}``) into ``run_dir``; a folder that cannot be
    written is logged, never raised (the job's own error matters)."""
    if run_dir is None:
        return
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        Path(run_dir, FAILED).write_text(json.dumps({"error": error}, indent=2) + "\n")
    except OSError as err:
        log.warning("could not record the failure in %s: %s", run_dir, err)


def read_failure(run_dir: str | os.PathLike) -> str | None:
    """The error a failed run recorded, else None: its first line, and the first item of a list
    that line announces ("invalid config (6 problems): - data.train_images=...")."""
    path = Path(run_dir, FAILED)
    if not path.is_file():
        return None
    try:
        error = json.loads(path.read_text()).get("error")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return "failed (unreadable failed.json)"
    lines = [line.strip() for line in str(error or "failed").splitlines() if line.strip()]
    if lines[0].endswith(":") and len(lines) > 1:
        return f"{lines[0]} {lines[1]}" + (" ..." if len(lines) > 2 else "")
    return lines[0]


def records_failures(main: Main) -> Main:
    """Wrap a Hydra task function (inside ``exit_on_explained_errors``): a stale
    ``failed.json`` is removed when the job starts, and any exception the job ends with is
    recorded in a new one, then raised on."""

    @functools.wraps(main)
    def task(*args: Any, **kwargs: Any) -> Any:
        run_dir = job_dir()
        clear_failure(run_dir)
        try:
            return main(*args, **kwargs)
        except Exception as err:
            record_failure(run_dir, explained(err))
            raise

    return task  # type: ignore[return-value]
