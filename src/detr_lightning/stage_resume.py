"""Resuming a staged run (``stages:``, :mod:`detr_lightning.stages`) where it stopped.

``ckpt_path=last`` / ``auto`` (or a checkpoint given by path) inside
``<run>/stage<k>_<name>/checkpoints/`` resumes ``<run>``, in the same directory: the stages
before stage k are finished (their best checkpoint starts the next stage, as in a run that was
not interrupted); stage k is finished too when it wrote its ``stage_done.json`` (or its own
``metrics.json``), otherwise it resumes from that checkpoint; the stages after it train as
usual. The run's CSV log survives a resume into its folder (:func:`keep_resumed_log`: staged runs
and sweep jobs). Standard library only at import time.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

_log = logging.getLogger(__name__)

DONE = "stage_done.json"  # written into a stage's folder when its training (and test) returned


class StageResumeError(ValueError):
    """``ckpt_path`` given with ``stages`` does not lie in one of the config's stage folders."""


def resume_point(ckpt: str, folders: list[str]) -> tuple[Path, int]:
    """(run directory, index of the stage ``ckpt`` belongs to) for a checkpoint in
    ``<run>/<one of folders>/checkpoints/``; StageResumeError otherwise."""
    path = Path(ckpt).absolute()
    stage_dir = path.parent.parent
    if path.parent.name != "checkpoints" or stage_dir.name not in folders:
        raise StageResumeError(
            f"ckpt_path={ckpt} with stages: not a checkpoint of this config's stages (a staged "
            f"run keeps them in <run dir>/{{{','.join(folders)}}}/checkpoints/). Fix: "
            "ckpt_path=last or ckpt_path=auto (the newest staged run of the experiment), a file "
            "in one of those folders, or resume one stage alone: `stages=null <that stage's "
            "overrides> ckpt_path=<its last.ckpt>` (the overrides are listed under stages)."
        )
    return stage_dir.parent, folders.index(stage_dir.name)


def stage_finished(stage_dir: Path) -> bool:
    """The stage's training returned: its ``stage_done.json`` or its own ``metrics.json``."""
    return (stage_dir / DONE).is_file() or (stage_dir / "metrics.json").is_file()


def mark_done(stage_dir: Path, checkpoint: str | None, minutes: float) -> None:
    """Write the stage's ``stage_done.json`` (its checkpoint and minutes)."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    payload = {"checkpoint": checkpoint, "minutes": minutes}
    from detr_lightning.checkpointing.atomic_io import atomic_write_text

    atomic_write_text(stage_dir / DONE, json.dumps(payload, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """The json in ``path`` ({} when absent); a torn file (written before writes were atomic, or
    by hand) stops the resume naming it."""
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not readable json ({err}). Fix: delete it; the stage is then resumed "
            "from its last.ckpt (or retrained) instead of taken as finished."
        ) from err


def finished_stage(stage_dir: Path) -> tuple[dict[str, float], float | None]:
    """(the test metrics in its metrics.json, {} without one; its minutes, None if unknown)."""
    metrics, done = read_json(stage_dir / "metrics.json"), read_json(stage_dir / DONE)
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    return numbers, done.get("minutes")


def keep_interrupted_log(csv_dir: Path) -> Path | None:
    """Rename an interrupted stage's ``metrics.csv`` to ``metrics_part<k>.csv`` before the stage
    resumes in the same folder (Lightning's CSV logger would delete it); the report reads the
    parts and the new file as one log (:func:`detr_lightning.run_dirs.read_val_curve`)."""
    log = csv_dir / "metrics.csv"
    if not log.is_file():
        return None
    k = 1 + sum(1 for _ in csv_dir.glob("metrics_part*.csv"))
    kept = csv_dir / f"metrics_part{k}.csv"
    log.rename(kept)
    return kept


def keep_resumed_log(cfg: Any) -> str | None:
    """Before a resume creates its logger: keep the CSV log the run folder already holds (a
    sweep job resumed with ``ckpt_path=auto|last`` in its own folder, a staged run's stage), as
    ``metrics_part<k>.csv``; Lightning's CSVLogger would delete it. Returns the kept file."""
    from omegaconf import OmegaConf

    csv_logger = OmegaConf.select(cfg, "logger.csv", default=None)
    if not csv_logger or not str(csv_logger.get("_target_", "")).endswith("CSVLogger"):
        return None
    folder = Path(str(csv_logger.save_dir)) / str(csv_logger.get("name") or "lightning_logs")
    version = csv_logger.get("version")
    if version is None:  # Lightning picks a new version_<n> folder: nothing is overwritten
        return None
    folder = folder / (version if isinstance(version, str) else f"version_{version}")
    kept = keep_interrupted_log(folder)
    if kept is not None:
        _log.info("resuming into %s: its earlier log is kept as %s", folder, kept)
    return str(kept) if kept else None


def elapsed_before(ckpt_path: str) -> float:
    """Seconds of training a checkpoint records (the ElapsedTime callback's state; 0 without)."""
    import torch

    try:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - an unreadable file is named by the resume's own check
        return 0.0
    state = (
        checkpoint.get("callbacks", {}).get("ElapsedTime", {})
        if isinstance(checkpoint, dict)
        else {}
    )
    return float(state.get("elapsed_s", 0.0)) if isinstance(state, dict) else 0.0
