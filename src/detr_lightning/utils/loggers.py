"""Logger construction: wandb that goes offline by itself when no account is configured.

One wandb run per Hydra job: a sweep's jobs share a ``group``, carry their overrides as tags and
as ``config.overrides``, and every job finishes its run (:func:`finish_wandb`) so that Hydra's
in-process launcher never logs two jobs into one run. A sweep job's run is named
:func:`sweep_run_name` (the configured name and its overrides), and the config it logs says that
name (:func:`with_wandb_run_name`), so a run's config and its name agree.
"""

from __future__ import annotations

import contextlib
import logging
import netrc
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger

from detr_lightning.errors import ExplainedError

log = logging.getLogger(__name__)

_OFFLINE_MODES = ("offline", "dryrun", "disabled")
MAX_TAG_LEN = 64  # wandb rejects longer tags
# Overrides that say where things are or what the run is called, not what was run: no tag
# (and no part of a sweep job's run name) for them.
_UNTAGGED_PREFIXES = ("paths.", "hydra.", "ckpt_path", "logger.")
_UNTAGGED_KEYS = ("run_name", "tags")


def wandb_credentials_present() -> bool:
    """True when ``WANDB_API_KEY`` is set or a netrc holds an ``api.wandb.ai`` entry
    (what ``wandb login`` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_wandb_offline(mode: str = "auto") -> bool:
    """Whether to run wandb offline.

    mode "online"/"offline" are taken literally; "auto" is offline when ``WANDB_MODE`` says so
    or when no credentials are configured (then runs are synced later with ``wandb sync``).
    """
    if mode not in ("auto", "online", "offline"):
        raise ValueError(f"logger.wandb.mode={mode!r}; use auto, online or offline")
    if mode != "auto":
        return mode == "offline"
    if os.environ.get("WANDB_MODE", "").lower() in _OFFLINE_MODES:
        return True
    return not wandb_credentials_present()


class WandbConnectionError(ExplainedError, ConnectionError):
    """wandb, online, could not reach its server."""


@contextlib.contextmanager
def explained_wandb_connection_errors() -> Iterator[None]:
    """wandb's communication error (a compute node with credentials but no route out: it waits
    about 90 s, then raises from deep in its service) as one line with the fix, before training
    starts."""
    try:
        yield
    except Exception as err:
        errors = sys.modules.get("wandb.errors")
        if errors is None or not isinstance(err, errors.CommError):
            raise
        raise WandbConnectionError(
            f"wandb could not reach its server: {err}. Fix: logger.wandb.mode=offline (or "
            "WANDB_MODE=offline) logs the run locally, to upload later with `wandb sync`; or "
            "logger=csv."
        ) from None


def override_tag(override: str) -> str:
    """A Hydra override as a wandb tag: leading key parts dropped while it is over 64 chars."""
    key, sep, value = override.partition("=")
    parts = key.split(".")
    while len(parts) > 1 and len(".".join(parts) + sep + value) > MAX_TAG_LEN:
        parts = parts[1:]
    tag = ".".join(parts) + sep + value
    return tag if len(tag) <= MAX_TAG_LEN else tag[: MAX_TAG_LEN - 1] + "~"


def override_tags(overrides: Sequence[str], exclude_keys: Sequence[str] = ()) -> list[str]:
    """Tags for a job's overrides, without ``exclude_keys`` (Hydra's override_dirname ones),
    the path-like keys (``paths.*``, ``hydra.*``, ``ckpt_path``) and those that name or label
    the run (``run_name``, ``tags``, ``logger.*``)."""
    tags = []
    for override in overrides:
        key = override.partition("=")[0].lstrip("+~")
        if key in exclude_keys or key in _UNTAGGED_KEYS or key.startswith(_UNTAGGED_PREFIXES):
            continue
        tags.append(override_tag(override))
    return tags


def hydra_job() -> dict[str, Any]:
    """The running Hydra job: ``overrides`` (list), ``exclude_keys`` and ``sweep`` (the sweep
    folder's name in a multirun, else None). Empty values outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    info: dict[str, Any] = {"overrides": [], "exclude_keys": [], "sweep": None}
    if not HydraConfig.initialized():
        return info
    hc = HydraConfig.get()
    info["overrides"] = list(hc.overrides.task or [])
    info["exclude_keys"] = list(hc.job.config.override_dirname.exclude_keys or [])
    if hc.mode == RunMode.MULTIRUN and hc.sweep.dir:
        info["sweep"] = Path(str(hc.sweep.dir)).name
    return info


def sweep_run_name(name: str | None, job: dict[str, Any]) -> str | None:
    """The wandb run name of a Hydra job (:func:`hydra_job`) configured with ``name``: in a
    multirun, ``name`` and the job's override tags, so that the sweep's runs are told apart by
    name; the name itself otherwise (or when the job has no taggable override)."""
    tags = override_tags(job["overrides"], job["exclude_keys"])
    return f"{name}_{','.join(tags)}" if name and job["sweep"] and tags else name


def with_wandb_run_name(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved run ``config`` as a logger should record it: ``logger.wandb.name`` set to the
    name :func:`wandb_logger` gives the run (:func:`sweep_run_name` under ``sweep_group``), and
    ``run_name`` too where the wandb name was built from it (``name: ${run_name}``, the
    default). Without this a sweep job's config said the plain experiment name next to a run
    named with its overrides. Hydra's ``.hydra/config.yaml`` keeps the composed value."""
    logger = config.get("logger")
    wandb = logger.get("wandb") if isinstance(logger, dict) else None
    if not isinstance(wandb, dict) or not str(wandb.get("_target_")).endswith(".wandb_logger"):
        return config  # no wandb, or one that names its run otherwise
    name = wandb.get("name")
    real = sweep_run_name(name, hydra_job()) if wandb.get("sweep_group", True) else name
    if real == name:
        return config
    named = {**config, "logger": {**logger, "wandb": {**wandb, "name": real}}}
    if config.get("run_name") == name:
        named["run_name"] = real
    return named


def finish_wandb(summary: Mapping[str, float] | None = None, exit_code: int | None = None) -> None:
    """Finish the active wandb run, if any, after writing ``summary`` as ``test/<name>`` keys.

    A no-op when wandb was never imported or no run is active (non-zero ranks, other loggers).
    """
    if "wandb" not in sys.modules:
        return
    import wandb

    run = wandb.run
    if run is None:
        return
    if summary:
        run.summary.update({f"test/{k}": float(v) for k, v in summary.items()})
    run.finish(exit_code=exit_code)


def run_job(job: Callable[[Any], Mapping[str, float]], cfg: Any) -> float | None:
    """Run one Hydra job (``train``/``evaluate`` on ``cfg``) and finish its wandb run: with the
    job's metrics as the summary, or failed when it raises (a sweep's next job starts anew).
    Returns the metrics' ``AP`` (what sweepers such as Optuna optimise)."""
    try:
        metrics = job(cfg)
    except BaseException:
        finish_wandb(exit_code=1)
        raise
    finish_wandb(summary=metrics)
    return metrics.get("AP")


def wandb_logger(
    mode: str = "auto",
    save_dir: str = ".",
    group: str | None = None,
    tags: Sequence[str] = (),
    sweep_group: bool = True,
    tag_overrides: bool = True,
    **kwargs: Any,
) -> WandbLogger:
    """A Lightning ``WandbLogger`` for one Hydra job; ``kwargs`` go to it (project, name, ...).

    In a multirun, ``sweep_group`` appends the sweep folder's name (its launch time) to
    ``group``, so one sweep is one wandb group, and the job's overrides (as tags, see
    :func:`override_tags`) to the run's ``name``, so that its runs are told apart by name.
    ``tag_overrides`` adds the job's overrides to ``tags``; they are also in
    ``config.overrides``. A run left open in this process (a failed
    earlier job) is finished first, so that this job gets its own run.
    """
    offline = resolve_wandb_offline(mode)
    os.makedirs(save_dir, exist_ok=True)
    job = hydra_job()
    job_tags = override_tags(job["overrides"], job["exclude_keys"])
    if sweep_group and job["sweep"]:
        if group:
            group = f"{group}-{job['sweep']}"
        kwargs["name"] = sweep_run_name(kwargs.get("name"), job)
    tags = list(tags)
    if tag_overrides:
        tags += [t for t in job_tags if t not in tags]
    config = {"overrides": job["overrides"], **kwargs.pop("config", {})}
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        log.warning("finishing the wandb run left open by an earlier job in this process")
        finish_wandb(exit_code=1)
    if offline:
        log.info(
            "wandb offline (no WANDB_API_KEY / `wandb login`); upload later with "
            "`wandb sync %s/wandb/offline-run-*`",
            save_dir,
        )
    return WandbLogger(
        offline=offline, save_dir=save_dir, group=group, tags=tags, config=config, **kwargs
    )
