"""``ckpt_path=last|auto`` resolved in a config before anything heavy runs.

Training resumes the experiment's newest ``last.ckpt`` (a sweep job: its own folder's only);
evaluation and prediction load the newest, or the final stage's of a staged run
(:mod:`detr_lightning.checkpointing.locate`). Only omegaconf, Hydra's config and the standard
library are imported (and, for the picked run's overrides, PyYAML through ``run_dirs``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from detr_lightning.checkpointing.locate import (
    SPECIAL,
    NoCheckpointFound,
    job_checkpoints,
    resolve_ckpt_path,
)

log = logging.getLogger(__name__)

# Stages that need weights: ckpt_path=auto finding nothing is an error there, not a fresh start.
NEEDS_WEIGHTS = ("test", "predict")


def resolve_special_ckpt_path(cfg: DictConfig, stage: str = "fit") -> None:
    """Replace ``ckpt_path=last|auto`` in ``cfg`` by the newest ``last.ckpt`` of the experiment
    (``outputs/<experiment>/*/checkpoints/last.ckpt``, or None for "auto" with none to resume;
    with ``stages``, in the stage folders: ``checkpointing.locate.resolve_ckpt_path``)."""
    value = cfg.get("ckpt_path")
    if value not in SPECIAL:
        return
    try:
        root = OmegaConf.select(cfg, "paths.root_dir", default=None) or os.getcwd()
        experiment = str(OmegaConf.select(cfg, "experiment_name", default=None) or "")
        stages = [str(name) for name in (cfg.get("stages") or {})]
    except OmegaConfBaseException as err:  # ${hydra:...} outside a Hydra app
        from detr_lightning.utils.config_check import ConfigError

        raise ConfigError(
            f"ckpt_path={value}: cannot tell the experiment's output folder ({err}). Fix: give "
            "the checkpoint's path, or set experiment_name and paths.root_dir."
        ) from err
    needs = stage in NEEDS_WEIGHTS
    if not needs and _sweep_job():
        resolved = _resolve_in_job(value, str(cfg.paths.output_dir), stages)
    else:
        resolved = resolve_ckpt_path(value, root, experiment, required=needs, stages=stages)
    log.info("ckpt_path=%s -> %s", value, resolved or "none found: starting from scratch")
    if resolved and not needs and not _sweep_job():
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized() and (
            warning := other_command(value, resolved, list(HydraConfig.get().overrides.task))
        ):
            log.warning(warning)
    with open_dict(cfg):
        cfg.ckpt_path = resolved


def _own_overrides(overrides: list[str]) -> set[str]:
    """The overrides that make a run what it is: without ``ckpt_path`` and Hydra's own."""
    return {o for o in overrides if not o.lstrip("+~").startswith(("ckpt_path=", "hydra."))}


def other_command(value: str, resolved: str, overrides: list[str]) -> str | None:
    """A warning when the run that ``ckpt_path=value`` picked (``resolved``, the experiment's
    newest) was started with other overrides than ``overrides`` (this command's): outside a
    sweep the newest ``last.ckpt`` may be another configuration's (two jobs of the experiment
    with other seeds, say), which the resume would then continue. None when they agree or the
    run's ``.hydra/overrides.yaml`` is not found."""
    import yaml

    from detr_lightning.run_dirs import recorded_overrides

    folder = Path(os.path.abspath(resolved)).parent.parent  # <run>[/<stage>]
    try:
        recorded = recorded_overrides(folder)
        if recorded is None:  # a stage's checkpoint: the run's folder is one up
            recorded = recorded_overrides(folder.parent)
    except (OSError, yaml.YAMLError, TypeError):
        return None
    if recorded is None:
        return None
    theirs, ours = _own_overrides(recorded), _own_overrides(overrides)
    if theirs == ours:
        return None
    return (
        f"ckpt_path={value} resumes {resolved}, the experiment's newest, whose run was started "
        f"with other overrides: only there {sorted(theirs - ours)}, only here "
        f"{sorted(ours - theirs)}. If that is another configuration's run, stop and give the "
        "checkpoint to resume (ckpt_path=<its last.ckpt>), or start afresh without ckpt_path."
    )


def _sweep_job() -> bool:
    """Whether this process runs one job of a Hydra sweep (``-m``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _resolve_in_job(value: str, output_dir: str, stages: list[str]) -> str | None:
    found = job_checkpoints(output_dir, stages)
    if found:
        return os.path.abspath(found[0])
    if value == "auto":
        return None
    raise NoCheckpointFound(
        f"ckpt_path=last: no checkpoint in this sweep job's folder {output_dir} (a sweep job "
        "resumes only its own run). Fix: re-run the sweep with its hydra.sweep.dir=<the sweep's "
        "folder>, or use ckpt_path=auto (a job without a checkpoint then starts from scratch)."
    )
