"""Multi-stage training: ``stages:`` in the config runs one training per stage, in order.

The panoptic recipe (paper Sec. 4.4, ``head=panoptic``) trains in two stages: (1) the detector on
the boxes of every segment, things and stuff, without a mask head; (2) the mask head on the
frozen detector, started from stage 1's best checkpoint. ``stages`` maps each stage's name to
the Hydra overrides that turn the composed config into that stage's, as a mapping (label ->
override; a preset adds, replaces or, with null, drops single entries) or a list::

    stages:
      detector: {no_mask_head: model.segmentation=null, ...}
      masks: {frozen: model.segmentation.freeze_detr=true, schedule: schedule=panoptic_masks}

Each stage is composed anew from the run's own command-line overrides plus its overrides (and
``stages=null``), trains and tests as a one-stage run in ``<run dir>/stage<i>_<name>/``
(checkpoints, logs, its ``metrics.json``), and hands its best checkpoint to the next stage as
``model.init_detector``. The last stage's metrics are also written to ``<run dir>/metrics.json``
with, under ``run.stages``, each stage's directory, checkpoint, minutes, epochs and global step
(the last two from the stage's own metrics.json, or its last.ckpt when it tests nothing).
``stages=null`` on the command line trains the composed config in one run (joint training for
``head=panoptic``).
``ckpt_path=last`` / ``auto`` resumes the newest staged run of the experiment in its own directory:
finished stages are not retrained, the interrupted one continues from its last.ckpt
(:mod:`detr_lightning.stage_resume`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf, open_dict

from detr_lightning.checkpointing.locate import stage_folders
from detr_lightning.stage_resume import (
    StageResumeError,
    elapsed_before,
    finished_stage,
    mark_done,
    read_json,
    resume_point,
    stage_finished,
)
from detr_lightning.utils import absolute_path
from detr_lightning.utils.config_check import ConfigError

log = logging.getLogger(__name__)


def stage_overrides(cfg: DictConfig) -> list[tuple[str, list[str]]]:
    """``cfg.stages`` -> ``[(name, [override, ...]), ...]`` in order (null entries dropped)."""
    stages = OmegaConf.to_container(cfg.stages, resolve=True)
    if not isinstance(stages, dict) or not stages:
        raise ConfigError(f"stages must map stage names to overrides; got {stages!r}")
    out = []
    for name, overrides in stages.items():
        values = overrides.values() if isinstance(overrides, dict) else overrides or []
        out.append((str(name), [str(v) for v in values if v is not None]))
    return out


def stage_entry(cfg: DictConfig, name: str, override: str) -> str:
    """The override path of the stage entry that holds ``override``: ``stages.<name>.<label>``
    for a mapping, ``stages.<name>.<index>`` for a list (Hydra's syntax for an element)."""
    entries = cfg.stages[name]
    if isinstance(entries, DictConfig):
        label = next(k for k, v in entries.items() if v is not None and str(v) == override)
        return f"stages.{name}.{label}"
    return f"stages.{name}.{list(map(str, entries)).index(override)}"


def compose_stages(cfg: DictConfig, stages: list[tuple[str, list[str]]], base: list[str],
                   config_name: str) -> dict[str, DictConfig]:  # fmt: skip
    """Every stage's config, composed before the first trains, so that an override which does
    not apply (``model.lr_schedule.budget_min`` under ``schedule=smoke``) stops the run at once,
    naming its entry, and not after the stages before it have trained."""
    from hydra import compose

    composed = {}
    for name, overrides in stages:
        try:
            composed[name] = compose(config_name, overrides=[*base, *overrides, "stages=null"])
        except Exception as err:  # noqa: BLE001 - Hydra's composition errors have no common type
            wrong = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") in str(err)]
            entries = [stage_entry(cfg, name, o) for o in wrong]
            where = ", ".join(f"{o} ({e})" for o, e in zip(wrong, entries, strict=True))
            drop = " ".join(f"{e}=null" for e in entries) or f"stages.{name}=..."
            first = str(err).strip().splitlines()[0]
            raise ConfigError(
                f"stage '{name}': its override {where or ' '.join(overrides)} does not apply to "
                f"this config ({first}). "
                f"Fix: drop it for this run with {drop}, or choose the config the preset expects "
                "(a short staged run of shapes_panoptic: schedule=smoke "
                "stages.detector.budget=null stages.masks.schedule=null)."
            ) from None
    return composed


def best_checkpoint(stage_dir: Path) -> str | None:
    """The checkpoint a finished stage was tested with (its metrics.json), else its newest
    best-metric checkpoint (every rank finds the same file), else its last.ckpt."""
    ckpt = read_json(stage_dir / "metrics.json").get("run", {}).get("checkpoint")
    if ckpt and Path(ckpt).is_file():
        return str(ckpt)
    files = sorted((stage_dir / "checkpoints").glob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    best = [p for p in files if not p.name.startswith("last")]
    chosen = best[-1:] or [p for p in files if p.name == "last.ckpt"]
    return str(chosen[0]) if chosen else None


def stage_info(stage_dir: Path, checkpoint: str | None, minutes: float | None) -> dict[str, Any]:
    """A finished stage's entry under ``run.stages``: its directory, checkpoint and minutes, and
    ``epochs`` / ``global_step`` from its own metrics.json ``run``; a stage that tests nothing
    (``test=false``, the panoptic detector's) has them from its last.ckpt, which the last epoch's
    end writes (None each without either file)."""
    run = read_json(stage_dir / "metrics.json").get("run", {})
    progress = {key: run.get(key) for key in ("epochs", "global_step")}
    last = stage_dir / "checkpoints" / "last.ckpt"
    if progress["epochs"] is None and last.is_file():
        from detr_lightning.checkpointing.read import CheckpointLoadError, read_checkpoint

        try:
            saved = read_checkpoint(last)
            # "epoch" is the index of the epoch whose end wrote the file: epochs = index + 1
            progress = {"epochs": int(saved["epoch"]) + 1, "global_step": int(saved["global_step"])}
        except (CheckpointLoadError, KeyError, TypeError) as err:  # a record, not a reason to stop
            log.warning("run.stages.%s: epochs and step unknown (%s)", stage_dir.name, err)
    return {"dir": str(stage_dir), "checkpoint": checkpoint, "minutes": minutes} | progress


@rank_zero_only
def _say(text: str) -> None:
    print(text, flush=True)


def run_stages(
    cfg: DictConfig, train_one: Callable[[DictConfig], dict[str, float]]
) -> dict[str, float]:
    """Train every stage of ``cfg.stages`` with ``train_one`` (the one-stage ``train``); returns
    the last stage's metrics. Must run inside the Hydra app (it composes with its overrides)."""
    from hydra.core.hydra_config import HydraConfig

    from detr_lightning.evaluation import write_metrics_json
    from detr_lightning.utils.loggers import finish_wandb

    stages = stage_overrides(cfg)
    folders = stage_folders([name for name, _ in stages])
    # resolved: the stages' folders and checkpoints are recorded in metrics.json from it
    run_dir, resume_at = Path(absolute_path(cfg.paths.output_dir)), -1  # -1: a new run
    if cfg.get("ckpt_path"):  # ckpt_path=last/auto resolved to a stage's checkpoint (or given)
        try:
            run_dir, resume_at = resume_point(str(cfg.ckpt_path), folders)
        except StageResumeError as err:
            raise ConfigError(str(err)) from None
        _say(f"=== resuming the staged run {run_dir} (this job's log: {cfg.paths.output_dir})")
    hydra_cfg = HydraConfig.get()
    to_train = [
        (name, overrides)
        for i, (name, overrides) in enumerate(stages)
        if not (i < resume_at or (i == resume_at and stage_finished(run_dir / folders[i])))
    ]
    configs = compose_stages(
        cfg, to_train, list(hydra_cfg.overrides.task), hydra_cfg.job.config_name
    )
    metrics: dict[str, float] = {}
    info: dict[str, Any] = {}
    previous: str | None = None
    for i, (name, overrides) in enumerate(stages, start=1):
        stage_dir = run_dir / folders[i - 1]
        if name not in configs:
            previous = best_checkpoint(stage_dir)
            metrics, minutes = finished_stage(stage_dir)
            info[name] = stage_info(stage_dir, previous, minutes)
            _say(f"=== stage {i}/{len(stages)}: {name} already finished; checkpoint {previous}")
            continue
        stage_cfg = configs[name]
        with open_dict(stage_cfg):
            stage_cfg.paths.output_dir = str(stage_dir)
            stage_cfg.run_name = f"{cfg.run_name}-{name}"
            # the command line's ckpt_path=last/auto is the whole run's, not this stage's
            stage_cfg.ckpt_path = cfg.ckpt_path if i - 1 == resume_at else None
            if not stage_cfg.ckpt_path:  # resume_recipe is for the stage that resumes
                stage_cfg.resume_recipe = "checkpoint"
            if previous is not None:
                stage_cfg.model.init_detector = previous
        _say(f"=== stage {i}/{len(stages)}: {name} ({' '.join(overrides) or 'no overrides'})")
        start = time.perf_counter()
        if stage_cfg.ckpt_path and rank_zero_only.rank == 0:  # this stage resumes in its folder
            # (its CSV log is kept by build_run: resume_logs.keep_resumed_log)
            start -= elapsed_before(str(stage_cfg.ckpt_path))  # its minutes before the stop
        metrics = train_one(stage_cfg)
        previous = best_checkpoint(stage_dir)
        minutes = round((time.perf_counter() - start) / 60, 2)
        info[name] = stage_info(stage_dir, previous, minutes)
        if rank_zero_only.rank == 0:
            mark_done(stage_dir, previous, minutes)
        _say(f"=== stage {i}/{len(stages)}: {name} done in {minutes} min; checkpoint {previous}")
        if i < len(stages):
            finish_wandb(summary=metrics)  # one wandb run per stage
    if rank_zero_only.rank == 0 and metrics:
        path = write_metrics_json(run_dir, metrics, experiment=cfg.get("experiment_name"),
                                  checkpoint=previous, stages=info)  # fmt: skip
        _say(f"metrics: {path}\nrun directory: {run_dir}")
    return metrics
