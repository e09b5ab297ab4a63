"""What a resume leaves in run folders so that one training's history reads as one.

* A resume into the run's own folder (a staged run's interrupted stage, a sweep job resumed with
  ``ckpt_path=auto``) keeps the CSV log there as ``metrics_part<k>.csv``: Lightning's CSVLogger
  would delete it (:func:`keep_resumed_log`).
* A resume into a new folder (``ckpt_path=last`` or a checkpoint's path: a new
  ``outputs/<experiment>/<time>/``) writes ``resumed_from.json`` there, naming the run and the
  global step it continues (:func:`record_resumed_from`); the report draws one curve through
  both folders (:func:`detr_lightning.run_dirs.load_run`).

Standard library only at import time.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from detr_lightning.utils import absolute_path

_log = logging.getLogger(__name__)

RECORD = "resumed_from.json"


def keep_interrupted_log(csv_dir: Path) -> Path | None:
    """Rename the ``metrics.csv`` in ``csv_dir`` to ``metrics_part<k>.csv`` before a resume in
    the same folder (Lightning's CSV logger would delete it); the report reads the parts and the
    new file as one log (:func:`detr_lightning.run_dirs.read_val_curve`)."""
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
    ``metrics_part<k>.csv``. Returns the kept file."""
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


def checkpoint_run(ckpt: str | Path) -> Path | None:
    """The run folder a checkpoint was written by (``<run>/checkpoints/<file>``); None for a
    file kept elsewhere."""
    path = Path(absolute_path(ckpt))
    return path.parent.parent if path.parent.name == "checkpoints" else None


def record_resumed_from(run_dir: str | Path, ckpt: str, global_step: int) -> Path | None:
    """Write ``<run_dir>/resumed_from.json`` when ``ckpt`` belongs to another run's folder:
    ``{"run": its folder, "checkpoint": ckpt, "global_step": the step it holds}``. A resume
    into the checkpoint's own folder writes nothing (its log goes on there)."""
    earlier, here = checkpoint_run(ckpt), Path(absolute_path(run_dir))
    if earlier is None or earlier == here:
        return None
    from detr_lightning.checkpointing.atomic_io import atomic_write_text

    record = {"run": str(earlier), "checkpoint": absolute_path(ckpt),
              "global_step": int(global_step)}  # fmt: skip
    here.mkdir(parents=True, exist_ok=True)
    atomic_write_text(here / RECORD, json.dumps(record, indent=2) + "\n")
    return here / RECORD


def resumed_from(run_dir: Path) -> tuple[Path, int] | None:
    """(the earlier run's folder, the global step resumed from) that ``run_dir`` continues;
    None for a run that resumed nothing, or whose earlier folder is gone. A moved ``outputs/``
    still reads: the earlier folder is looked for beside ``run_dir`` first."""
    path = run_dir / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        earlier, step = Path(record["run"]), int(record["global_step"])
    except (ValueError, KeyError, TypeError) as err:
        _log.warning("%s: not a readable record (%s); the run is shown on its own", path, err)
        return None
    for candidate in (run_dir.parent / earlier.name, earlier):
        if candidate.is_dir() and candidate.absolute() != run_dir.absolute():
            return candidate, step
    _log.warning("%s: the run it resumed (%s) is gone; its curve starts at the resume", path,
                 earlier)  # fmt: skip
    return None
