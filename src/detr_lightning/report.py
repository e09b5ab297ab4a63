"""Compare runs without a server: ``python -m detr_lightning.report RUN_OR_FOLDER ... [--out DIR]``.

Every argument is a run directory (``outputs/<exp>/<time>``) or a folder holding runs (a sweep's
``multirun/<exp>/<time>``, or ``outputs/<exp>``). Each run's ``metrics.json``,
``.hydra/overrides.yaml`` and ``csv/metrics.csv`` are read, and written to ``--out``:

* ``report.md``: one row per run with its overrides and AP, AP50, AP75, AP_S, AP_M, AP_L, AR,
  and, when a run is panoptic, PQ, PQ things, PQ stuff, SQ, RQ and segm AP;
* ``ap_by_size.png``: AP_S / AP_M / AP_L grouped bars across runs;
* ``val_ap.png``: val AP against epoch and against wall time (runs with a CSV log).

``--out`` defaults to the argument when there is one, else ``./report``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

COLUMNS = {"AP": "AP", "AP50": "AP50", "AP75": "AP75", "AP_S": "AP_S", "AP_M": "AP_M",
           "AP_L": "AP_L", "AR_100": "AR"}  # fmt: skip
PANOPTIC_COLUMNS = {"PQ": "PQ", "PQ_th": "PQ th", "PQ_st": "PQ st", "SQ": "SQ", "RQ": "RQ",
                    "segm_AP": "segm AP"}  # fmt: skip
CURVE_KEYS = ("val/AP", "epoch", "time/elapsed_s")
_SKIP_DIRS = {"checkpoints", "csv", "wandb", "tensorboard", "val_images", ".hydra"}


@dataclass
class Run:
    """What one run left in its directory."""

    path: Path
    overrides: list[str] = field(default_factory=list)  # .hydra/overrides.yaml
    metrics: dict[str, float] = field(default_factory=dict)  # metrics.json; empty: no test
    info: dict = field(default_factory=dict)  # metrics.json "run": epochs, checkpoint, ...
    curve: list[dict[str, float]] = field(default_factory=list)  # validations, in step order


def _natural(path: Path) -> list:
    """Sort key: sweep job 10 after job 9."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def is_run_dir(path: Path) -> bool:
    """A run leaves metrics.json (after its test) or .hydra/overrides.yaml (from its start)."""
    return (path / "metrics.json").is_file() or (path / ".hydra" / "overrides.yaml").is_file()


def find_runs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The run directories at or under ``paths``, each once, in argument then natural order."""
    found: list[Path] = []
    for root in map(Path, paths):
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such run or sweep directory")
        here: list[Path] = []
        for dirpath, dirnames, _ in os.walk(root):
            if is_run_dir(Path(dirpath)):
                here.append(Path(dirpath))
                dirnames.clear()
            else:
                dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS]
        found += [p for p in sorted(here, key=_natural) if p not in found]
    if not found:
        raise FileNotFoundError(f"no run directories (metrics.json, .hydra/) under {list(paths)}")
    return found


def read_val_curve(csv_path: Path) -> list[dict[str, float]]:
    """The validation points of a Lightning CSV log: val/AP, epoch, time/elapsed_s per step
    (values logged at one step are merged, whichever rows hold them)."""
    by_step: dict[int, dict[str, float]] = defaultdict(dict)
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(float(row.get("step") or -1))
            by_step[step].update({k: float(row[k]) for k in CURVE_KEYS if row.get(k)})
    return [p for _, p in sorted(by_step.items()) if "val/AP" in p]


def load_run(path: Path) -> Run:
    """Read one run directory; absent files leave their fields empty."""
    run = Run(path)
    overrides = path / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        run.overrides = [str(o) for o in yaml.safe_load(overrides.read_text()) or []]
    if (path / "metrics.json").is_file():
        payload = json.loads((path / "metrics.json").read_text())
        run.info = payload.pop("run", {}) or {}
        run.metrics = {k: float(v) for k, v in payload.items() if isinstance(v, int | float)}
    if (path / "csv" / "metrics.csv").is_file():
        run.curve = read_val_curve(path / "csv" / "metrics.csv")
    return run


def split_overrides(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    """(overrides every run has, each run's other overrides): what a sweep varied."""
    common = [o for o in runs[0].overrides if all(o in r.overrides for r in runs)]
    return common, [[o for o in r.overrides if o not in common] for r in runs]


def run_labels(runs: Sequence[Run], varying: Sequence[Sequence[str]]) -> list[str]:
    """Short plot labels: the varied overrides (last key part), else the run's folder name."""
    labels = []
    for run, overrides in zip(runs, varying, strict=True):
        parts = [o.partition("=")[0].split(".")[-1] + "=" + o.partition("=")[2] for o in overrides]
        labels.append(", ".join(parts) or run.path.name)
    if len(set(labels)) < len(labels):  # ambiguous: prefix the folder name
        labels = [f"{r.path.name}: {lab}" for r, lab in zip(runs, labels, strict=True)]
    return labels


def _cell(value: float | None, best: float | None) -> str:
    if value is None or math.isnan(value):
        return "–"
    text = f"{value:.4f}"
    return f"**{text}**" if best is not None and value == best else text


def wall_seconds(run: Run) -> float | None:
    """Elapsed time at the run's last validation; for a staged run (its metrics.json lists the
    stages, each with its minutes) the stages' sum."""
    if run.curve and "time/elapsed_s" in run.curve[-1]:
        return run.curve[-1]["time/elapsed_s"]
    stages = run.info.get("stages") or {}
    minutes = [s.get("minutes") for s in stages.values()]
    return 60.0 * sum(minutes) if minutes and None not in minutes else None


def markdown(runs: Sequence[Run], images: Sequence[str]) -> str:
    """report.md: common overrides, the table (best value per column in bold), the figures."""
    common, varying = split_overrides(runs)
    names = [
        os.path.relpath(r.path, os.path.commonpath([r.path.parent for r in runs])) for r in runs
    ]
    panoptic = any("PQ" in r.metrics for r in runs)
    columns = COLUMNS | PANOPTIC_COLUMNS if panoptic else COLUMNS
    best: dict[str, float | None] = {}
    for key in columns:  # bold the best value of a column, unless every run has it
        values = [r.metrics[key] for r in runs if key in r.metrics]
        best[key] = max(values) if len(set(values)) > 1 else None
    lines = ["# Run comparison", ""]
    if common:
        lines += ["Overrides of every run: " + " ".join(f"`{o}`" for o in common), ""]
    header = ["run", "overrides", *columns.values(), "epochs", "wall s"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, run, extra in zip(names, runs, varying, strict=True):
        wall = wall_seconds(run)
        cells = [name, " ".join(f"`{o}`".replace("|", "\\|") for o in extra) or "–"]
        cells += [_cell(run.metrics.get(k), best[k]) for k in columns]
        cells += [str(run.info.get("epochs", "–")), "–" if wall is None else f"{wall:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["AR: AR@100, all sizes. -1: no object of that size in the split (COCO). "
             "–: no metrics.json (the run failed or is still running)."]  # fmt: skip
    if panoptic:
        notes.append("PQ th / PQ st: things / stuff; segm AP: the thing masks' COCO AP. A staged "
                     "run's wall time is its stages' sum.")  # fmt: skip
    lines += ["", *notes, ""]
    return "\n".join(lines + [f"![{Path(i).stem}]({i})" for i in images]) + "\n"


def write_report(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None) -> Path:
    """Find the runs under ``paths``, write report.md and the PNGs into ``out``; returns
    report.md's path."""
    from detr_lightning.evaluation.report_plots import SIZES, plot_ap_by_size, plot_val_curves

    runs = [load_run(p) for p in find_runs(paths)]
    out = Path(out if out is not None else paths[0] if len(paths) == 1 else "report")
    out.mkdir(parents=True, exist_ok=True)
    labels = run_labels(runs, split_overrides(runs)[1])
    images = []
    tested = [(lab, r) for lab, r in zip(labels, runs, strict=True) if r.metrics]
    if tested:
        values = [[r.metrics.get(k, math.nan) for k in SIZES] for _, r in tested]
        images.append(plot_ap_by_size([lab for lab, _ in tested], values, out / "ap_by_size.png"))
    if any(r.curve for r in runs):
        images.append(plot_val_curves(labels, [r.curve for r in runs], out / "val_ap.png"))
    path = out / "report.md"
    path.write_text(markdown(runs, [i.name for i in images]))
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m detr_lightning.report RUN_OR_FOLDER ... [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or folders of runs (sweeps)")
    parser.add_argument("--out", help="output folder (default: the one argument, else ./report)")
    args = parser.parse_args(argv)
    path = write_report(args.runs, args.out)
    print(path.read_text().split("\n\n![")[0])
    print(f"report: {path}")


if __name__ == "__main__":
    main()
