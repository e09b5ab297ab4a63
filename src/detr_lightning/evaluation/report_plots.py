"""The figures of :mod:`detr_lightning.report`: AP by object size, and val AP (PQ) curves.

Matplotlib's object API with the Agg canvas: no display and no pyplot state are needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

SIZES = ("AP_S", "AP_M", "AP_L")


def _save(fig: Figure, path: str | Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def plot_ap_by_size(
    labels: Sequence[str], values: Sequence[Sequence[float]], path: str | Path
) -> Path:
    """Grouped bars: for every run (x axis) its AP_S, AP_M and AP_L side by side.

    ``values[i]`` holds run i's (AP_S, AP_M, AP_L); a negative or NaN value (COCO's -1: no
    object of that size in the split) draws no bar.
    """
    width = 0.8 / len(SIZES)
    fig = Figure(figsize=(max(6.0, 1.2 * len(labels) + 2), 4.5))
    ax = fig.add_subplot()
    for j, size in enumerate(SIZES):
        heights = [v[j] if v[j] >= 0 else math.nan for v in values]
        xs = [i + (j - 1) * width for i in range(len(labels))]
        bars = ax.bar(xs, heights, width, label=size)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    rotate = len(labels) > 3
    ax.set_xticks(
        range(len(labels)), labels, rotation=20 if rotate else 0, ha="right" if rotate else "center"
    )
    ax.set_ylabel("AP (IoU 0.50:0.95)")
    ax.set_title("AP by object size (COCO small < 32², medium < 96², large)")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def plot_val_curves(
    labels: Sequence[str],
    curves: Sequence[Sequence[dict[str, float]]],
    path: str | Path,
    key: str = "val/AP",
) -> Path:
    """``key`` (val AP, or val/PQ) against epochs completed (left) and wall-clock seconds
    (right), a line per run.

    Each curve is a list of points with ``key``, "epoch" (0-based, as logged) and optionally
    "time/elapsed_s" (the ElapsedTime callback).
    """
    name = key.replace("/", " ")
    fig = Figure(figsize=(11, 4.5))
    by_epoch, by_time = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for label, points in zip(labels, curves, strict=True):
        if not points:
            continue
        values = [p[key] for p in points]
        by_epoch.plot([p.get("epoch", math.nan) + 1 for p in points], values, "o-", label=label)
        timed = [p for p in points if "time/elapsed_s" in p]
        if timed:
            xs = [p["time/elapsed_s"] for p in timed]
            by_time.plot(xs, [p[key] for p in timed], "o-", label=label)
    for ax, xlabel in ((by_epoch, "epochs completed"), (by_time, "wall time (s)")):
        ax.set_xlabel(xlabel)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
    by_epoch.set_title(f"{name} per epoch")
    by_time.set_title(f"{name} against wall time")
    return _save(fig, path)
