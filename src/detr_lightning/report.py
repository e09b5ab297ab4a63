"""Compare runs without a server: ``python -m detr_lightning.report RUN_OR_FOLDER ... [--out DIR]``.

Every argument is a run directory (``outputs/<exp>/<time>``) or a folder holding runs (a sweep's
``multirun/<exp>/<time>``, or ``outputs/<exp>``: its predict / export / visualize folders are
no runs and are skipped). Each run's ``metrics.json``, ``.hydra/overrides.yaml`` and
``csv/metrics.csv`` are read, and written to ``--out``:

* ``report.md``: one row per run with its overrides and AP, AP50, AP75, AP_S, AP_M, AP_L, AR,
  and, when a run is panoptic, PQ, PQ things, PQ stuff, SQ, RQ and segm AP; then each
  category's box AP (and PQ) in a row, a column per run (``metrics_per_category.json``);
* ``ap_by_size.png``: AP_S / AP_M / AP_L grouped bars across runs;
* ``val_ap.png``: val AP against epoch and against wall time (runs with a CSV log), and
  ``val_pq.png`` the same for val PQ when a run is panoptic. A staged run (``shapes_panoptic``:
  its metrics.json lists the stages) is one curve through its stages' logs, each stage's epochs
  and seconds counted after those of the stages before it. A run resumed into a new folder
  (``ckpt_path=last``: its ``resumed_from.json``) is one curve through the run it continues;
  that interrupted run (no metrics.json) is then no row of its own.

A job that failed (its ``failed.json``, :mod:`detr_lightning.job_failures`) says so in its row.

``--out`` defaults to the argument when there is one, else ``./report``.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from pathlib import Path

from detr_lightning.evaluation.per_category import per_category_markdown
from detr_lightning.job_failures import read_failure
from detr_lightning.run_dirs import Run, find_runs, hydra_task, load_run, wall_seconds

COLUMNS = {"AP": "AP", "AP50": "AP50", "AP75": "AP75", "AP_S": "AP_S", "AP_M": "AP_M",
           "AP_L": "AP_L", "AR_100": "AR"}  # fmt: skip
PANOPTIC_COLUMNS = {"PQ": "PQ", "PQ_th": "PQ th", "PQ_st": "PQ st", "SQ": "SQ", "RQ": "RQ",
                    "segm_AP": "segm AP"}  # fmt: skip


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


def failure(run: Run) -> str | None:
    """The error of a run that failed (no metrics.json, its job's failed.json), else None."""
    return None if run.metrics else read_failure(run.path)


def epochs_cell(run: Run) -> str:
    """The epochs trained: metrics.json's count, or a staged run's per stage ("9+5"; "9+?" for
    a stage without its log); "failed" for a failed run."""
    if failure(run):
        return "failed"
    if run.stage_epochs:
        return "+".join("?" if e is None else str(e) for e in run.stage_epochs)
    return str(run.info.get("epochs", "–"))


def without_csv_log(run: Run) -> bool:
    """A tested training run without ``csv/metrics.csv`` (``logger=wandb`` or ``tensorboard``
    alone): it has metrics but no curve or wall time, and must not read as a failed run."""
    return (
        bool(run.metrics)
        and not run.info.get("stages")
        and not (run.path / "csv" / "metrics.csv").is_file()
        and hydra_task(run.path) != "eval"
    )


NO_CSV = "no csv"
NO_CSV_NOTE = (f"{NO_CSV}: metrics.json but no csv/metrics.csv (the run logged to wandb or "
               "tensorboard only, or logger=none): run with logger=csv (or "
               "logger=[csv,wandb]) for curves and wall time.")  # fmt: skip


def wall_cell(run: Run) -> str:
    wall = wall_seconds(run)
    if wall is not None:
        return f"{wall:.1f}"
    return NO_CSV if without_csv_log(run) else "–"


def continued_elsewhere(runs: Sequence[Run]) -> list[Run]:
    """The runs without metrics.json that another of ``runs`` resumed: an interrupted training
    whose curve and result are that run's."""
    resumed = {r.resumed[0].resolve() for r in runs if r.resumed is not None}
    return [r for r in runs if not r.metrics and r.path.resolve() in resumed]


def _names(runs: Sequence[Run]) -> dict[Path, str]:
    """Each run's folder relative to the folder that holds them all."""
    root = os.path.commonpath([r.path.parent.absolute() for r in runs])
    return {r.path: os.path.relpath(r.path.absolute(), root) for r in runs}


def resume_notes(runs: Sequence[Run], names: dict[Path, str]) -> list[str]:
    """One note per resumed run: which run and step it continues."""
    notes = []
    for run in [r for r in runs if r.resumed is not None]:
        earlier, step = run.resumed
        shown = next((n for p, n in names.items() if p.resolve() == earlier.resolve()), earlier)
        notes.append(f"{names[run.path]} resumed {shown} at global step {step}: its curve "
                     "starts with that run's validations up to that step.")  # fmt: skip
    return notes


def markdown(runs: Sequence[Run], images: Sequence[str], hidden: Sequence[Run] = ()) -> str:
    """report.md: common overrides, the table (best value per column in bold), the figures.
    ``hidden``: runs continued by one of ``runs`` (no row; named in the notes)."""
    common, varying = split_overrides(runs)
    where = _names([*runs, *hidden])
    names = [where[r.path] for r in runs]
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
        cells = [name, " ".join(f"`{o}`".replace("|", "\\|") for o in extra) or "–"]
        cells += [_cell(run.metrics.get(k), best[k]) for k in columns]
        cells += [epochs_cell(run), wall_cell(run)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["AR: AR@100, all sizes. -1: no object of that size in the split (COCO). "
             "–: not there (no metrics.json: the run failed or is still running; "
             "an evaluation run trains no epochs and logs no training time)."]  # fmt: skip
    if any(without_csv_log(r) for r in runs):
        notes.append(NO_CSV_NOTE)
    left_out = [name for name, run in zip(names, runs, strict=True) if not run.curve]
    if "val_ap.png" in images and left_out:
        notes.append("val_ap.png leaves out the runs without a validation log: "
                     + ", ".join(left_out) + ".")  # fmt: skip
    notes += [f"{name} failed: {error}" for name, run in zip(names, runs, strict=True)
              if (error := failure(run))]  # fmt: skip
    notes += resume_notes(runs, where)
    if hidden:
        notes.append("No row (interrupted, continued by a resumed run above): "
                     + ", ".join(where[r.path] for r in hidden) + ".")  # fmt: skip
    if panoptic:
        notes.append("PQ th / PQ st: things / stuff; segm AP: the thing masks' COCO AP. A staged "
                     "run's wall time is its stages' sum, its epochs one count per stage.")  # fmt: skip
    lines += ["", *notes, ""]
    lines += per_category_markdown(names, [r.per_category for r in runs])
    return "\n".join(lines + [f"![{Path(i).stem}]({i})" for i in images]) + "\n"


def write_report(paths: Sequence[str | os.PathLike], out: str | os.PathLike | None = None) -> Path:
    """Find the runs under ``paths``, write report.md and the PNGs into ``out``; returns
    report.md's path."""
    from detr_lightning.evaluation.report_plots import SIZES, plot_ap_by_size, plot_val_curves

    runs = [load_run(p) for p in find_runs(paths)]
    hidden = continued_elsewhere(runs)
    runs = [r for r in runs if r not in hidden]
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
    if any("val/PQ" in p for r in runs for p in r.curve):
        curves = [[p for p in r.curve if "val/PQ" in p] for r in runs]
        images.append(plot_val_curves(labels, curves, out / "val_pq.png", key="val/PQ"))
    path = out / "report.md"
    path.write_text(markdown(runs, [i.name for i in images], hidden))
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """Command line: ``python -m detr_lightning.report RUN_OR_FOLDER ... [--out DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or folders of runs (sweeps)")
    parser.add_argument("--out", help="output folder (default: the one argument, else ./report)")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.runs, args.out)
    except FileNotFoundError as err:  # a path given, or no run under it: usage, not a trace
        parser.error(str(err))
    # the summary table on the terminal; the per-category tables (80 rows on COCO) in the file
    print(path.read_text().split("\n\n![")[0].split("\n## ")[0].rstrip())
    print(f"report: {path}")


if __name__ == "__main__":
    main()
