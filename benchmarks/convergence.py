"""``make bench-convergence``: AP versus wall time of the shapes preset, each lever on and off.

Every variant is one ``python -m detr_lightning.train experiment=shapes ...`` run with a wall
budget (the shapes schedule anneals within ``model.lr_schedule.budget_min``); validation AP is logged after every epoch together with the
seconds since training started (``time/elapsed_s``, from the ElapsedTime callback). Writes
into ``benchmarks/results/convergence/``:

* ``curves.csv``: variant, elapsed_s, epoch, AP, AP50, AP_S, AP_M, AP_L per validation;
* ``curves.png``: AP against minutes, one line per variant;
* ``table.md``: best and last AP, AP50 and epochs reached per variant (printed as well; a last
  epoch cut short counts by its share of steps).

The variants switch one lever of the preset at a time (or swap one component for the earlier
presets' choice) plus the paper's recipe at CPU size. ``--budget-min`` sets the wall budget per variant (default 5; the
issue's target is measured with 15), ``--only a,b`` picks variants, ``--extra "k=v ..."`` adds overrides to every run.
Run: ``python benchmarks/convergence.py [--budget-min 5] [--only shapes,no_denoising]``.

``--fit-images N`` measures fitting speed instead, which separates the levers long before a
short wall budget shows any validation AP: every variant trains ``--fit-steps`` optimizer steps
(default 200) on the same N generated images without augmentation (128 px) and is evaluated on
those images; the table goes to ``fit_table.md``.
"""

from __future__ import annotations

import argparse
import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

from detr_lightning.data.shapes import generate_shapes_dataset

OUT = Path("benchmarks/results/convergence")
# The paper's recipe at the preset's size: a preset of its own, shared with the slow test.
PAPER_RECIPE = ["experiment=shapes_plain"]
VARIANTS: dict[str, list[str]] = {
    "shapes": [],
    # The decoder's start: proposal logits as a prior; the memory detached from the decoder
    # (the preset lets the decoder's losses reach the trunk).
    "no_class_prior": ["model.net.queries.class_prior=false"],
    "detach_memory": ["model.net.detach_memory=true"],
    # Plain top-k query selection instead of 3x3 peaks of the proposal score map.
    "no_peaks": ["model.net.queries.head.peaks=false"],
    # The per-token linear proposal head instead of the conv tower.
    "linear_proposals": ["proposal_head@model.net.queries.head=linear"],
    # Learned anchor queries (no two-stage), the conv head kept as a training-only aux head.
    "no_two_stage": ["queries=anchors", "aux_head=conv"],
    "grid_queries": ["queries=grid", "aux_head=conv"],
    "no_denoising": ["~denoiser"],
    "no_focal": ["cls_loss=softmax"],
    "with_encoder_layer": ["model.net.transformer.num_encoder_layers=1"],
    # The earlier presets' backbone: half-width ResNet-18 cut at layer3 (stride 16); the
    # decoder's second level is then its stride-4 layer1.
    "resnet18_backbone": ["backbone=narrow_r18", "model.net.cross_attention.levels=[layer1]"],
    # The deformable decoder reads the memory only (8 points), not the stride-4 stage too.
    "single_scale": ["cross_attention=deformable"],
    "paper_recipe": PAPER_RECIPE,
    # The decoder-hook example on the paper's recipe (compare with paper_recipe).
    "conditional_queries": [*PAPER_RECIPE, "model=convergence", "decoder_hook=conditional"],
}
KEYS = {
    "val/AP": "AP",
    "val/AP50": "AP50",
    "val/AP_S": "AP_S",
    "val/AP_M": "AP_M",
    "val/AP_L": "AP_L",
}


def budget_overrides(budget_min: float, planned: bool = True) -> list[str]:
    """A wall budget. The shapes schedule (``planned``) anneals within it and ends on its own,
    so its hard stop leaves a minute's slack; another preset's schedule plans nothing, so the
    budget itself is its hard stop (with the slack it would train past the table's budget)."""
    if not planned:
        s = round(budget_min * 60)
        return [f"trainer.max_time=00:{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}",
                "trainer.max_epochs=100"]  # fmt: skip
    minutes = int(budget_min + 1)
    return [
        f"model.lr_schedule.budget_min={budget_min}",
        f"trainer.max_time=00:00:{minutes:02d}:00",
        "trainer.max_epochs=100",
    ]


def experiment_of(overrides: list[str]) -> list[str]:
    """The preset a variant names (``experiment=...``), else the shapes preset."""
    return [o for o in overrides if o.startswith("experiment=")] or ["experiment=shapes"]


def fit_overrides(root: Path, images: int, steps: int, batch_size: int = 8) -> list[str]:
    """Train ``steps`` steps on the ``images`` train images of ``root`` (no augmentation, no lr
    drop) and validate once, at the end, on those same images."""
    epochs = max(1, steps * batch_size // images)
    return [
        f"paths.shapes_dir={root}", f"data.val_images={root}/train",
        f"data.val_ann={root}/annotations/instances_train.json", f"data.batch_size={batch_size}",
        "data.train_transforms.scales=[128]", "data.train_transforms.crop_prob=0",
        "data.train_transforms.flip_prob=0", "data.val_transforms.size=128",
        f"trainer.max_steps={steps}", f"trainer.max_epochs={epochs}",
        f"trainer.check_val_every_n_epoch={epochs}", "trainer.num_sanity_val_steps=0",
        "schedule=smoke", "trainer.limit_train_batches=null", "trainer.limit_val_batches=null",
        "trainer.max_time=null", "callbacks.val_images=null",
    ]  # fmt: skip


def run_variant(
    name: str, overrides: list[str], setting: list[str], extra: list[str] = ()
) -> list[dict[str, float]]:
    """Train one variant; return its validation curve (one dict per validation)."""
    # A variant may name its own preset (experiment=...); every other override follows it.
    experiment = experiment_of(overrides)
    overrides = [o for o in overrides if not o.startswith("experiment=")]
    cmd = [
        sys.executable, "-m", "detr_lightning.train", *experiment, *setting,
        "test=false", "logger=csv", f"run_name=convergence_{name}", *overrides, *extra,
    ]  # fmt: skip
    print(f"[convergence] {name}: {' '.join(cmd[2:])}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    match = re.search(r"run directory: (\S+)", proc.stdout)
    if proc.returncode != 0 or match is None:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise RuntimeError(f"variant {name} failed (exit {proc.returncode})")
    return read_curve(Path(match.group(1)))


def read_curve(run_dir: Path) -> list[dict[str, float]]:
    """The validation curve logged by a training run (its csv logger's metrics.csv)."""
    curve = []
    with (run_dir / "csv" / "metrics.csv").open() as f:
        for row in csv.DictReader(f):
            if row.get("val/AP") and row.get("time/elapsed_s"):
                point = {"elapsed_s": float(row["time/elapsed_s"]), "epoch": float(row["epoch"]),
                         "step": float(row["step"]) + 1}  # fmt: skip
                point.update({short: float(row[k]) for k, short in KEYS.items() if row.get(k)})
                curve.append(point)
    return curve


def write_fit_table(curves: dict[str, list[dict[str, float]]], images: int, steps: int) -> str:
    """Write fit_table.md (final AP on the training images per variant); return it."""
    lines = [
        f"| variant (fit {images} images, {steps} steps) | AP | AP50 | AP_S | AP_M | AP_L |",
        "|---|---|---|---|---|---|",
    ]
    for name, curve in curves.items():
        last = curve[-1] if curve else dict.fromkeys(KEYS.values(), float("nan"))
        lines.append(
            f"| {name} | {last['AP']:.3f} | {last['AP50']:.3f} | {last['AP_S']:.3f} | "
            f"{last['AP_M']:.3f} | {last['AP_L']:.3f} |"
        )
    table = "\n".join(lines)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "fit_table.md").write_text(table + "\n")
    return table


def write_results(curves: dict[str, list[dict[str, float]]], budget_min: float) -> str:
    """Write curves.csv, curves.png and table.md; return the table."""
    OUT.mkdir(parents=True, exist_ok=True)
    fields = ["variant", "elapsed_s", "epoch", "step", *KEYS.values()]
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
            f"{last['AP_S']:.3f} | {last['AP_M']:.3f} | {last['AP_L']:.3f} | {epochs_done(curve):.1f} |"
        )
    table = "\n".join(lines)
    (OUT / "table.md").write_text(table + "\n")

    plot_curves(curves, OUT / "curves.png")
    return table


def epochs_done(curve: list[dict[str, float]]) -> float:
    """Epochs trained by the last validation, a last epoch cut short (by max_time or by the
    budget's plan) counted by its share of steps."""
    # A whole epoch's validation has the most steps per epoch; a part-epoch's has fewer.
    per_epoch = max(p["step"] / (p["epoch"] + 1) for p in curve)
    return curve[-1]["step"] / per_epoch


def plot_curves(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    """AP against wall minutes, one line per curve, saved as a PNG."""
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--budget-min", type=float, default=5.0)
    parser.add_argument("--only", default="", help="comma-separated variant names")
    parser.add_argument("--extra", default="", help="Hydra overrides for every variant")
    parser.add_argument("--fit-images", type=int, default=0, help="fitting-speed mode (0 = off)")
    parser.add_argument("--fit-steps", type=int, default=200)
    parser.add_argument(
        "--plot", nargs="+", metavar="LABEL=RUN_DIR", help="only plot finished runs' curves"
    )
    parser.add_argument("--plot-out", type=Path, default=OUT / "runs.png")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(VARIANTS)
    unknown = set(names) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    extra = args.extra.split()
    if args.plot:
        runs = dict(item.split("=", 1) for item in args.plot)
        plot_curves({label: read_curve(Path(d)) for label, d in runs.items()}, args.plot_out)
        print(f"[convergence] plot in {args.plot_out}")
        return
    if args.fit_images:
        root = OUT / "fit_data"
        shutil.rmtree(root, ignore_errors=True)
        generate_shapes_dataset(root, train=args.fit_images, val=1)
        setting = fit_overrides(root.resolve(), args.fit_images, args.fit_steps)
        curves = {name: run_variant(name, VARIANTS[name], setting, extra) for name in names}
        print(write_fit_table(curves, args.fit_images, args.fit_steps))
        return
    curves = {}
    for name in names:
        planned = experiment_of(VARIANTS[name]) == ["experiment=shapes"]
        setting = budget_overrides(args.budget_min, planned)
        curves[name] = run_variant(name, VARIANTS[name], setting, extra)
    print(write_results(curves, args.budget_min))
    print(f"[convergence] curves and plot in {OUT}/")


if __name__ == "__main__":
    main()
