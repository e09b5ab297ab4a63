"""Resuming a staged run (``stages:``, :mod:`detr_lightning.stages`) where it stopped.

``ckpt_path=last`` / ``auto`` (or a checkpoint given by path) inside
``<run>/stage<k>_<name>/checkpoints/`` resumes ``<run>``, in the same directory: the stages
before stage k are finished (their best checkpoint starts the next stage, as in a run that was
not interrupted); stage k is finished too when it wrote its ``stage_done.json`` (or its own
``metrics.json``), otherwise it resumes from that checkpoint; the stages after it train as
usual. The run's CSV log survives a resume into its folder
(:func:`detr_lightning.resume_logs.keep_resumed_log`). Standard library only at import time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from detr_lightning.errors import ExplainedError
from detr_lightning.resume_logs import checkpoint_run

DONE = "stage_done.json"  # written into a stage's folder when its training (and test) returned


class StageResumeError(ExplainedError, ValueError):
    """``ckpt_path`` given with ``stages`` does not lie in one of the config's stage folders."""


def resume_point(ckpt: str, folders: list[str]) -> tuple[Path, int]:
    """(run directory, index of the stage ``ckpt`` belongs to) for a checkpoint in
    ``<run>/<one of folders>/checkpoints/``; StageResumeError otherwise."""
    stage_dir = checkpoint_run(ckpt)
    if stage_dir is None or stage_dir.name not in folders:
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
