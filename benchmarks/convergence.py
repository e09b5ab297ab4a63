"""``make bench-convergence``: AP versus wall time of the shapes preset, each lever on and off.

Every variant is one ``python -m detr_lightning.train experiment=shapes ...`` run with a wall
budget (``trainer.max_time``); validation AP is logged after every epoch together with the
seconds since training started (``time/elapsed_s``, from the ElapsedTime callback). Writes
into ``benchmarks/results/convergence/``:

* ``curves.csv``: variant, elapsed_s, epoch, AP, AP50, AP_S, AP_M, AP_L per validation;
* ``curves.png``: AP against minutes, one line per variant;
* ``table.md``: best and last AP, AP50 and epochs reached per variant (printed as well).

The variants are leave-one-out ablations of the preset (which has every lever on) plus the
paper's recipe at CPU size. ``--budget-min`` sets the wall budget per variant (default 5; the
issue's target is measured with 15), ``--only a,b`` picks variants, ``--extra "k=v ..."`` adds overrides to every run.
Run: ``python benchmarks/convergence.py [--budget-min 5] [--only shapes,no_denoising]``.
"""

from __future__ import annotations

import argparse
import csv
import re
import subprocess
import sys
from pathlib import Path

OUT = Path("benchmarks/results/convergence")
PAPER_RECIPE = [
    "model.net.two_stage=false",
    "model.net.box_refine=false",
    "model.net.query_groups=1",
    "model.net.denoising.groups=0",
    "model.net.focal=false",
    "model.net.backbone.norm=frozen_bn",
    "model.net.backbone.train_stem=false",
    "model.net.backbone.last_stage=layer4",
    "model.net.backbone.width=64",
    "model.net.transformer.dropout=0.1",
    "model.lr_backbone=1e-5",
    "model.warmup_steps=0",
]
VARIANTS: dict[str, list[str]] = {
    "shapes": [],
    "no_two_stage": ["model.net.two_stage=false"],
    # two_stage needs box_refine, so refinement is measured with both off.
    "no_two_stage_no_refine": ["model.net.two_stage=false", "model.net.box_refine=false"],
    "no_denoising": ["model.net.denoising.groups=0"],
    "no_focal": ["model.net.focal=false"],
    "full_width": ["model.net.backbone.width=64"],
    "frozen_bn_backbone": [
        "model.net.backbone.norm=frozen_bn",
        "model.net.backbone.train_stem=false",
    ],
    "paper_recipe": PAPER_RECIPE,
}
KEYS = {
    "val/AP": "AP",
    "val/AP50": "AP50",
    "val/AP_S": "AP_S",
    "val/AP_M": "AP_M",
    "val/AP_L": "AP_L",
}


def run_variant(
    name: str, overrides: list[str], budget_min: float, extra: list[str] = ()
) -> list[dict[str, float]]:
    """Train one variant; return its validation curve (one dict per validation)."""
    minutes = int(budget_min)
    seconds = int(round((budget_min - minutes) * 60))
    cmd = [
        sys.executable, "-m", "detr_lightning.train", "experiment=shapes",
        f"trainer.max_time=00:00:{minutes:02d}:{seconds:02d}", "test=false", "logger=csv",
        f"run_name=convergence_{name}", *overrides, *extra,
    ]  # fmt: skip
    print(f"[convergence] {name}: {' '.join(cmd[2:])}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    match = re.search(r"run directory: (\S+)", proc.stdout)
    if proc.returncode != 0 or match is None:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise RuntimeError(f"variant {name} failed (exit {proc.returncode})")
    metrics_csv = Path(match.group(1)) / "csv" / "metrics.csv"
    curve = []
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            if row.get("val/AP") and row.get("time/elapsed_s"):
                point = {"elapsed_s": float(row["time/elapsed_s"]), "epoch": float(row["epoch"])}
                point.update({short: float(row[k]) for k, short in KEYS.items() if row.get(k)})
                curve.append(point)
    return curve


def write_results(curves: dict[str, list[dict[str, float]]], budget_min: float) -> str:
    """Write curves.csv, curves.png and table.md; return the table."""
    OUT.mkdir(parents=True, exist_ok=True)
    fields = ["variant", "elapsed_s", "epoch", *KEYS.values()]
    with (OUT / "curves.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for name, curve in curves.items():
            for point in curve:
                writer.writerow({"variant": name, **point})
    lines = [
        f"| variant ({budget_min:g} min budget) | best AP | last AP | last AP50 | AP_S | AP_M | AP_L | epochs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, curve in curves.items():
        if not curve:
            lines.append(f"| {name} | - | - | - | - | - | - | 0 |")
            continue
        last = curve[-1]
        best = max(p["AP"] for p in curve)
        lines.append(
            f"| {name} | {best:.3f} | {last['AP']:.3f} | {last['AP50']:.3f} | "
            f"{last['AP_S']:.3f} | {last['AP_M']:.3f} | {last['AP_L']:.3f} | {last['epoch'] + 1:.0f} |"
        )
    table = "\n".join(lines)
    (OUT / "table.md").write_text(table + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        ax.plot(
            [p["elapsed_s"] / 60 for p in curve], [p["AP"] for p in curve], marker="o", label=name
        )
    ax.set_xlabel("wall time (min, 2 CPU cores)")
    ax.set_ylabel("val AP")
    ax.set_title("DETR on the shapes data: AP versus time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "curves.png", dpi=120)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--budget-min", type=float, default=5.0)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument("--extra", default="", help="Hydra overrides for every variant")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    extra = args.extra.split()
    curves = {name: run_variant(name, VARIANTS[name], args.budget_min, extra) for name in names}
    print(write_results(curves, args.budget_min))
    print(f"[convergence] curves and plot in {OUT}/")


if __name__ == "__main__":
    main()
