"""Run directories as train.py leaves them, for the report and run-reading tests."""

from __future__ import annotations

from pathlib import Path

import yaml
from lightning.pytorch.loggers import CSVLogger

from detr_lightning.evaluation.coco import write_metrics_json

COMMON = ["experiment=shapes", "schedule=smoke"]  # overrides every fake sweep job shares


def make_run(
    path: Path,
    overrides: list[str],
    metrics: dict[str, float] | None,
    val: list[tuple[int, float, float]] = (),
) -> Path:
    """A run directory as train.py leaves it: .hydra/overrides.yaml and hydra.yaml (job
    ``train``), metrics.json (unless None) and a Lightning CSV log whose validations (epoch,
    val/AP, elapsed s) end each 3-step epoch; elapsed time is logged in a row of its own, as
    callbacks may."""
    make_hydra_job(path, "train", overrides)
    if metrics is not None:
        write_metrics_json(path, metrics, experiment="shapes", epochs=len(val), global_step=9)
    if val:
        logger = CSVLogger(path, name="csv", version="")
        for epoch, ap, elapsed in val:
            step = 3 * epoch + 2
            logger.log_metrics({"train/loss": 1.0 - ap, "epoch": epoch}, step=step - 1)
            logger.log_metrics({"val/AP": ap, "epoch": epoch}, step=step)
            logger.log_metrics({"time/elapsed_s": elapsed, "epoch": epoch}, step=step)
        logger.save()
    return path


def make_hydra_job(path: Path, task: str, overrides: list[str]) -> Path:
    """The .hydra folder Hydra writes when job ``task`` (train, eval, predict, export,
    visualize: the module's name) starts in ``path``."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    job = {"name": task, "config_name": task, "chdir": None}
    (path / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": job}}))
    (path / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": 42}))
    return path


def make_tool_outputs(experiment: Path) -> list[Path]:
    """predict's, export's and visualize's folders next to an experiment's runs, as they write
    them (``<task>_<time>``, a Hydra job each, their files, no metrics.json)."""
    made = []
    for task, files in (("predict", ["predictions.json", "images.json", "drawn/a.png"]),
                        ("export", ["model.onnx"]), ("visualize", ["x_decoder.png"])):  # fmt: skip
        folder = make_hydra_job(experiment / f"{task}_2026-01-05_00-00-00", task, ["ckpt_path=x"])
        for name in files:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text("{}")
        made.append(folder)
    return made


def metrics(ap: float, ap_s: float = 0.1) -> dict[str, float]:
    return {"AP": ap, "AP50": ap + 0.2, "AP75": ap / 2, "AP_S": ap_s, "AP_M": ap + 0.01,
            "AP_L": ap + 0.05, "AR_1": 0.1, "AR_10": 0.2, "AR_100": ap + 0.1}  # fmt: skip


def make_staged_run(run: Path, stage_dirs_at: Path) -> Path:
    """A two-stage panoptic run: stage 1 validates box AP 0.1, 0.2, 0.3 at 50, 100, 150 s;
    stage 2 (detector frozen: AP 0.3) PQ 0.2, 0.3 at 50, 100 s; 3 and 2 minutes. metrics.json
    names the stage folders under ``stage_dirs_at`` (a run that has since moved when that is
    not ``run``)."""
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["experiment=shapes_panoptic"]))
    for folder, epochs in (("stage1_detector", 3), ("stage2_masks", 2)):
        logger = CSVLogger(run / folder, name="csv", version="")
        for epoch in range(epochs):
            row = {
                "val/AP": 0.1 * (epoch + 1),
                "epoch": epoch,
                "time/elapsed_s": 50.0 * (epoch + 1),
            }
            if folder == "stage2_masks":
                row |= {"val/AP": 0.3, "val/PQ": 0.2 + 0.1 * epoch}
            logger.log_metrics(row, step=10 * epoch + 9)
        logger.save()
    stages = {"detector": {"dir": str(stage_dirs_at / "stage1_detector"), "minutes": 3.0},
              "masks": {"dir": str(stage_dirs_at / "stage2_masks"), "minutes": 2.0}}  # fmt: skip
    write_metrics_json(run, metrics(0.3) | {"PQ": 0.3}, experiment="shapes_panoptic", stages=stages)
    return run
