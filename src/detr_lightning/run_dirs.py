"""What a run left in its directory: finding run directories under a folder, and reading each
one's ``metrics.json``, ``.hydra/overrides.yaml`` and CSV log (validation curve, wall time,
epochs), a staged run's through its stage folders, a resumed run's through the run it continues.
:mod:`detr_lightning.report` compares them.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from detr_lightning.resume_logs import resumed_from

log = logging.getLogger(__name__)

CURVE_KEYS = ("val/AP", "val/PQ", "epoch", "time/elapsed_s")
_SKIP_DIRS = {"checkpoints", "csv", "wandb", "tensorboard", "val_images", ".hydra"}


@dataclass
class Run:
    """What one run left in its directory."""

    path: Path
    overrides: list[str] = field(default_factory=list)  # .hydra/overrides.yaml
    metrics: dict[str, float] = field(default_factory=dict)  # metrics.json; empty: no test
    info: dict = field(default_factory=dict)  # metrics.json "run": epochs, checkpoint, ...
    curve: list[dict[str, float]] = field(default_factory=list)  # validations, in step order
    stage_epochs: list[int | None] = field(default_factory=list)  # per stage; None: no log
    resumed: tuple[Path, int] | None = None  # (the run it continues, the step): resumed_from.json
    per_category: dict = field(default_factory=dict)  # metrics_per_category.json (last stage's)


def _natural(path: Path) -> list:
    """Sort key: sweep job 10 after job 9."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


RUN_TASKS = ("train", "eval")  # the Hydra jobs that train or test a model (and metrics.json)


def hydra_task(path: Path) -> str | None:
    """The Hydra job that made ``path``: ``hydra.job.name`` in ``.hydra/hydra.yaml`` ("train",
    "eval", "predict", "export", "visualize"); None without a readable one."""
    try:
        config = yaml.safe_load((path / ".hydra" / "hydra.yaml").read_text()) or {}
        name = config["hydra"]["job"]["name"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return str(name) if name else None


def is_job_dir(path: Path) -> bool:
    """Any Hydra job's folder (or a run's, whose metrics.json marks it): nothing under it is a
    run of its own."""
    return (path / "metrics.json").is_file() or (path / ".hydra" / "overrides.yaml").is_file()


def is_run_dir(path: Path) -> bool:
    """A training or evaluation run: it leaves metrics.json (after its test) or, from its start,
    .hydra/overrides.yaml with a ``train`` / ``eval`` job in .hydra/hydra.yaml (a failed or
    running run). The folders that predict, export and visualize write (``predict_<time>`` ...
    next to the runs) are Hydra jobs too, and no runs. A folder without hydra.yaml counts as a
    run."""
    if (path / "metrics.json").is_file():
        return True
    if not (path / ".hydra" / "overrides.yaml").is_file():
        return False
    task = hydra_task(path)
    return task is None or task in RUN_TASKS


def find_runs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The run directories at or under ``paths``, each once, in argument then natural order."""
    found: list[Path] = []
    for root in map(Path, paths):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such run or sweep directory")
        here: list[Path] = []
        for dirpath, dirnames, _ in os.walk(root):
            if is_job_dir(Path(dirpath)):  # a run, or predict's / export's / visualize's output
                if is_run_dir(Path(dirpath)):
                    here.append(Path(dirpath))
                dirnames.clear()
            else:
                dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        found += [p for p in sorted(here, key=_natural) if p not in found]
    if not found:
        raise FileNotFoundError(
            f"no run directories (training or evaluation: metrics.json, .hydra/) under {list(paths)}"
        )
    return found


def read_val_curve(csv_path: Path) -> list[dict[str, float]]:
    """The validation points of a Lightning CSV log: val/AP (and val/PQ), epoch, time/elapsed_s
    per step (values logged at one step are merged, whichever rows hold them)."""
    by_step: dict[int, dict[str, float]] = defaultdict(dict)
    # an interrupted staged run's earlier parts (resume_logs.keep_interrupted_log), then the log
    parts = sorted(csv_path.parent.glob("metrics_part*.csv"), key=_part_number)
    for path in [*parts, csv_path]:
        _read_rows(path, by_step)
    return [p | {"step": float(s)} for s, p in sorted(by_step.items()) if "val/AP" in p]


def _part_number(path: Path) -> int:
    return int(path.stem.removeprefix("metrics_part") or 0)


def _read_rows(csv_path: Path, by_step: dict[int, dict[str, float]]) -> None:
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            step = _number(row.get("step"))
            values = {k: _number(row.get(k)) for k in CURVE_KEYS}
            torn = [k for k, v in values.items() if v is None and row.get(k) not in (None, "")]
            if step is None or torn:
                # a row cut by a killed writer (the log's last): its values are not numbers
                log.warning("%s: skipped a row that is not numbers: %s", csv_path, dict(row))
                continue
            by_step[int(step)].update({k: v for k, v in values.items() if v is not None})


def _number(text: str | None) -> float | None:
    """float(text); None for an empty or torn value."""
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def read_staged_curve(
    path: Path, stages: dict[str, dict]
) -> tuple[list[dict[str, float]], list[int | None]]:
    """(one curve through the stages' CSV logs, epochs per stage) of a staged run at ``path``.

    A stage's epochs are those up to its last validation (the budget validates its last,
    possibly partial, epoch). Its points move by the epochs of the stages before it and by their
    wall seconds (metrics.json ``minutes``, their tests included). A stage folder is looked for
    in ``path`` first, so a moved run still reads. The curve ends at the first stage without a
    log; its epochs and those of the stages after it are None.
    """
    curve: list[dict[str, float]] = []
    epochs: list[int | None] = []
    done, seconds = 0, 0.0
    for stage in stages.values():
        log = stage_folder(path, stage) / "csv" / "metrics.csv"
        if None in epochs or not log.is_file():
            epochs.append(None)
            continue
        points = read_val_curve(log)
        count = int(points[-1]["epoch"]) + 1 if points and "epoch" in points[-1] else 0
        for p in points:
            p["epoch"] = p.get("epoch", math.nan) + done
            if "time/elapsed_s" in p:
                p["time/elapsed_s"] += seconds
        curve += points
        epochs.append(count)
        done += count
        seconds += 60.0 * (stage.get("minutes") or math.nan)
    return curve, epochs


def _read_json(path: Path) -> dict[str, Any]:
    """The json object in ``path``; {} when absent, and {} with a warning naming the file when
    it is not a json object (a torn write): one broken run does not stop the report."""
    if not path.is_file():
        return {}
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        log.warning("%s: not readable json (%s); the run is shown without metrics", path, err)
        return {}
    return payload if isinstance(payload, dict) else {}


def recorded_overrides(path: Path) -> list[str] | None:
    """The command-line overrides the run in ``path`` was started with (its
    ``.hydra/overrides.yaml``), or None without that file."""
    overrides = path / ".hydra" / "overrides.yaml"
    if not overrides.is_file():
        return None
    return [str(o) for o in yaml.safe_load(overrides.read_text()) or []]


def stage_folder(path: Path, stage: dict) -> Path:
    """The folder of a staged run's ``stage`` (its metrics.json entry): looked for in the run
    ``path`` first, so that a moved run still reads, else where the entry's ``dir`` says."""
    recorded = Path(stage.get("dir", ""))
    inside = path / recorded.name
    return inside if inside.is_dir() else recorded


def per_category_file(path: Path, stages: dict[str, dict]) -> Path:
    """The run's ``metrics_per_category.json``: in ``path``, or for a staged run in its last
    stage's folder."""
    if stages and not (path / "metrics_per_category.json").is_file():
        path = stage_folder(path, list(stages.values())[-1])
    return path / "metrics_per_category.json"


def load_run(path: Path, _after: tuple[Path, ...] = ()) -> Run:
    """Read one run directory; absent files leave their fields empty. A run resumed from
    another run's checkpoint (its ``resumed_from.json``) has one curve: the earlier run's points
    up to the step resumed from, then its own."""
    run = Run(path)
    run.overrides = recorded_overrides(path) or []
    payload = _read_json(path / "metrics.json")
    if payload:
        run.info = payload.pop("run", {}) or {}
        run.metrics = {k: float(v) for k, v in payload.items() if isinstance(v, int | float)}
    if (path / "csv" / "metrics.csv").is_file():
        run.curve = read_val_curve(path / "csv" / "metrics.csv")
    elif run.info.get("stages"):
        run.curve, run.stage_epochs = read_staged_curve(path, run.info["stages"])
    run.per_category = _read_json(per_category_file(path, run.info.get("stages") or {}))
    run.resumed = resumed_from(path)
    if run.resumed is not None and run.resumed[0].resolve() not in _after:  # no loop of records
        earlier, step = run.resumed
        before = load_run(earlier, (*_after, path.resolve())).curve
        run.curve = [p for p in before if p["step"] <= step] + run.curve
    return run


def wall_seconds(run: Run) -> float | None:
    """A staged run's (its metrics.json lists the stages, each with its minutes) stages' sum;
    else the elapsed time at the run's last validation."""
    stages = run.info.get("stages") or {}
    minutes = [s.get("minutes") for s in stages.values()]
    if minutes:
        return 60.0 * sum(minutes) if None not in minutes else None
    if run.curve and "time/elapsed_s" in run.curve[-1]:
        return run.curve[-1]["time/elapsed_s"]
    return None
