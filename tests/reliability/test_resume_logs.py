"""A resume into the run's own folder keeps its CSV log: a sweep job resumed with
``ckpt_path=auto hydra.sweep.dir=<sweep>`` (Lightning's CSVLogger deletes an existing
metrics.csv)."""

from __future__ import annotations

from cli import TINY, run_cli

from detr_lightning.run_dirs import read_val_curve


def test_resumed_sweep_job_keeps_its_metrics_csv(tmp_path, shapes_root) -> None:
    sweep = tmp_path / "sweep"
    common = ["-m", "schedule=smoke", f"paths.shapes_dir={shapes_root}", *TINY,
              f"hydra.sweep.dir={sweep}", "seed=1"]  # fmt: skip
    run_cli("train", common, tmp_path)
    csv_dir = sweep / "0" / "csv"
    before = (csv_dir / "metrics.csv").read_text()
    assert before.count("\n") > 1

    out = run_cli("train", [*common, "ckpt_path=auto", "trainer.max_epochs=2"], tmp_path)
    assert f"-> {sweep / '0' / 'checkpoints'}" in out  # resumed in the job's own folder
    assert (csv_dir / "metrics_part1.csv").read_text() == before  # every earlier row kept
    curve = read_val_curve(csv_dir / "metrics.csv")  # what `report` reads: the whole run
    assert [p["epoch"] for p in curve] == [0.0, 1.0]
