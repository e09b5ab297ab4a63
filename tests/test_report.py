"""The run comparison report: table rows, overrides, curves and figures from run directories."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli import run_cli
from fake_runs import COMMON, make_hydra_job, make_run, make_staged_run, make_tool_outputs, metrics
from PIL import Image

from detr_lightning.evaluation.coco import write_metrics_json
from detr_lightning.report import COLUMNS, PANOPTIC_COLUMNS, main, write_report
from detr_lightning.resume_logs import record_resumed_from
from detr_lightning.run_dirs import find_runs


def table(report: str) -> list[list[str]]:
    """The summary table's body (before the per-category sections): cells per row, bold marks
    removed."""
    summary = report.split("\n## ")[0]
    rows = [line for line in summary.splitlines() if line.startswith("| ")][1:]
    return [[c.strip().replace("**", "") for c in row.strip("|").split("|")] for row in rows]


def assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 1000, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 200


@pytest.fixture
def sweep(tmp_path) -> tuple[Path, dict[str, dict[str, float]]]:
    """multirun/shapes/<time>/{0,1}: a sweep over num_decoder_layers=1,2."""
    root = tmp_path / "multirun" / "shapes" / "2026-01-01_00-00-00"
    written = {"0": metrics(0.31, ap_s=-1.0), "1": metrics(0.42)}
    for job, layers in (("0", 1), ("1", 2)):
        overrides = [*COMMON, f"model.net.transformer.num_decoder_layers={layers}"]
        curve = [(0, 0.1 * layers, 10.0 * layers), (1, 0.2 * layers, 20.0 * layers)]
        make_run(root / job, overrides, written[job], curve)
    return root, written


def test_report_on_a_sweep_has_a_row_per_run_and_valid_pngs(sweep, capsys) -> None:
    root, written = sweep
    main([str(root)])  # one folder: the report is written into it
    report = (root / "report.md").read_text()
    assert f"report: {root / 'report.md'}" in capsys.readouterr().out
    rows = table(report)
    assert [r[0] for r in rows] == ["0", "1"]
    for row, (job, values) in zip(rows, written.items(), strict=True):
        layers = int(job) + 1
        assert row[1] == f"`model.net.transformer.num_decoder_layers={layers}`"  # what varied
        assert row[2:9] == [f"{values[k]:.4f}" for k in COLUMNS]  # AP ... AP_L, AR (AR@100)
        assert row[9:] == ["2", f"{20.0 * layers:.1f}"]  # epochs, wall seconds at the last val
    assert "Overrides of every run: `experiment=shapes` `schedule=smoke`" in report
    assert "| **0.4200** |" in report and "| **0.3100** |" not in report  # best AP in bold
    for png in ("ap_by_size.png", "val_ap.png"):
        assert f"]({png})" in report
        assert_png(root / png)


def test_runs_from_several_folders_in_job_order_with_failed_jobs(sweep, tmp_path) -> None:
    root, _ = sweep
    make_run(root / "10", [*COMMON, "model.net.transformer.num_decoder_layers=6"], metrics(0.5))
    make_run(root / "2", [*COMMON, "model.net.transformer.num_decoder_layers=3"], None)  # failed
    single = make_run(tmp_path / "outputs" / "shapes" / "2026-01-02_00-00-00", COMMON, metrics(0.2))
    assert find_runs([root, single]) == [root / j for j in ("0", "1", "2", "10")] + [single]
    path = write_report([root, single], tmp_path / "cmp")
    rows = table(path.read_text())
    assert len(rows) == 5 and rows[2][2:9] == ["–"] * 7  # job 2: no metrics.json
    assert rows[4][0].endswith("2026-01-02_00-00-00") and rows[4][1] == "–"
    assert_png(tmp_path / "cmp" / "ap_by_size.png")
    with pytest.raises(FileNotFoundError, match="no run directories"):
        find_runs([tmp_path / "cmp"])


def test_predict_export_and_visualize_folders_are_no_runs(tmp_path) -> None:
    """``outputs/shapes`` holds training runs (one failed) and an evaluation, and predict's,
    export's and visualize's folders: only the runs are rows."""
    experiment = tmp_path / "outputs" / "shapes"
    done = make_run(experiment / "2026-01-01_00-00-00", COMMON, metrics(0.3), [(0, 0.3, 10.0)])
    failed = make_run(experiment / "2026-01-02_00-00-00", [*COMMON, "data.batch_size=abc"], None)
    evaluated = make_hydra_job(experiment / "eval_2026-01-03_00-00-00", "eval", ["ckpt_path=x"])
    write_metrics_json(evaluated, metrics(0.25), experiment="shapes")
    tools = make_tool_outputs(experiment)
    assert find_runs([experiment]) == [done, failed, evaluated]
    rows = table(write_report([experiment]).read_text())
    assert [r[0] for r in rows] == [done.name, failed.name, evaluated.name]
    assert rows[1][2:9] == ["–"] * 7 and rows[2][2] == "0.2500"  # the failed run stays
    with pytest.raises(FileNotFoundError, match="no run directories"):
        find_runs([tools[0]])  # a predict folder alone holds no run


def test_a_panoptic_run_adds_pq_columns_and_a_staged_run_its_stages_wall_time(
    sweep, tmp_path
) -> None:
    root, _ = sweep
    pq = {"PQ": 0.5, "PQ_th": 0.38, "PQ_st": 0.71, "SQ": 0.8, "RQ": 0.61, "segm_AP": 0.24}
    staged = tmp_path / "outputs" / "shapes_panoptic" / "2026-01-03_00-00-00"
    write_metrics_json(staged / "stage2_masks", metrics(0.5) | pq)  # not a row of its own
    stages = {"detector": {"dir": "d", "checkpoint": "a.ckpt", "minutes": 9.06},
              "masks": {"dir": "m", "checkpoint": "b.ckpt", "minutes": 8.14}}  # fmt: skip
    write_metrics_json(staged, metrics(0.5) | pq, experiment="shapes_panoptic", stages=stages)
    rows = table(write_report([root / "1", staged], tmp_path / "cmp").read_text())
    assert len(rows) == 2 and len(rows[0]) == 2 + len(COLUMNS) + len(PANOPTIC_COLUMNS) + 2
    assert rows[0][9:15] == ["–"] * 6  # the detection run has no PQ
    assert rows[1][9:15] == [f"{pq[k]:.4f}" for k in PANOPTIC_COLUMNS]
    assert rows[1][-1] == f"{60 * (9.06 + 8.14):.1f}" and rows[1][-2] == "?+?"  # no stage logs
    assert "PQ th / PQ st: things / stuff" in (tmp_path / "cmp" / "report.md").read_text()
    detection_only = table(write_report([root], tmp_path / "det").read_text())
    assert len(detection_only[0]) == 2 + len(COLUMNS) + 2  # no PQ columns without a panoptic run


def test_a_staged_run_reports_its_epochs_per_stage_and_a_pq_figure(tmp_path) -> None:
    run = make_staged_run(tmp_path / "shapes_panoptic" / "2026-01-03_00-00-00", tmp_path / "gone")
    report = write_report([run], tmp_path / "cmp").read_text()
    assert table(report)[0][-2:] == ["3+2", "300.0"]  # epochs per stage, the stages' minutes
    for png in ("val_ap.png", "val_pq.png"):
        assert f"]({png})" in report
        assert_png(tmp_path / "cmp" / png)


def test_report_bolds_no_value_when_every_run_has_it(tmp_path):
    """Comment in markdown(): 'bold the best value of a column, unless every run has it'.
    Two runs with equal AP: no bold; different AR: the larger one bold."""
    from pathlib import Path

    from detr_lightning.report import markdown
    from detr_lightning.run_dirs import Run

    runs = [Run(Path(tmp_path / "a"), ["x=1"], {"AP": 0.5, "AR_100": 0.3}),
            Run(Path(tmp_path / "b"), ["x=2"], {"AP": 0.5, "AR_100": 0.4})]  # fmt: skip
    text = markdown(runs, [])
    assert "**0.5000**" not in text and "0.5000" in text
    assert "**0.4000**" in text and "**0.3000**" not in text


def test_run_labels_get_no_folder_prefix_when_already_distinct(tmp_path):
    """Docstring: labels are the varied overrides (last key part); the folder name is
    prefixed only when labels are ambiguous."""
    from detr_lightning.report import run_labels
    from detr_lightning.run_dirs import Run

    runs = [Run(tmp_path / "r1"), Run(tmp_path / "r2")]
    assert run_labels(runs, [["model.lr=1"], ["model.lr=2"]]) == ["lr=1", "lr=2"]
    assert run_labels(runs, [["a.lr=1"], ["b.lr=1"]]) == ["r1: lr=1", "r2: lr=1"]


def test_a_run_without_a_csv_log_is_not_reported_as_failed(sweep, tmp_path) -> None:
    """logger=wandb: metrics.json but no csv/metrics.csv. Its wall time cell and the legend say
    so and how to get one, and the curve plot names it as left out."""
    root, _ = sweep
    make_run(root / "2", [*COMMON, "model.net.transformer.num_decoder_layers=3"], metrics(0.5))
    report = write_report([root], tmp_path / "cmp").read_text()
    rows = table(report)
    assert rows[2][2] == "0.5000" and rows[2][-1] == "no csv"
    assert rows[0][-1] == "20.0"  # a run with its log keeps its wall time
    assert "no csv: metrics.json but no csv/metrics.csv" in report
    assert "logger=[csv,wandb]" in report
    assert "val_ap.png leaves out the runs without a validation log: 2." in report


def test_an_interrupted_run_continued_by_a_resume_is_no_row_of_its_own(tmp_path) -> None:
    """t1 was killed after 2 epochs (no metrics.json); t2 resumed its step-5 checkpoint into a
    new folder (``ckpt_path=last``) and finished; t3 is another run. Two rows, and t2's curve
    runs through t1's validations."""
    experiment = tmp_path / "outputs" / "shapes"
    t1 = make_run(experiment / "t1", COMMON, None, [(0, 0.1, 20.0), (1, 0.2, 40.0)])
    t2 = make_run(experiment / "t2", [*COMMON, "ckpt_path=last"], metrics(0.4),
                  [(2, 0.3, 61.0), (3, 0.4, 81.0)])  # fmt: skip
    write_metrics_json(t2, metrics(0.4), experiment="shapes", epochs=4, global_step=11)
    make_run(experiment / "t3", [*COMMON, "seed=2"], metrics(0.35), [(0, 0.2, 21.0)])
    record_resumed_from(t2, str(t1 / "checkpoints" / "last.ckpt"), 5)
    report = write_report([experiment]).read_text()
    rows = table(report)
    assert [r[0] for r in rows] == ["t2", "t3"]
    assert rows[0][-2:] == ["4", "81.0"]  # trainer.current_epoch goes on; wall s too
    assert "t2 resumed t1 at global step 5" in report
    assert "No row (interrupted, continued by a resumed run above): t1." in report
    assert "val_ap.png leaves out" not in report  # t1's points are in t2's curve

    write_metrics_json(t1, metrics(0.2), experiment="shapes", epochs=2, global_step=5)
    assert [r[0] for r in table(write_report([experiment]).read_text())] == ["t1", "t2", "t3"]


def test_the_command_line_names_a_missing_folder_as_a_usage_error(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path / "nowhere")])
    assert stop.value.code == 2  # argparse's usage error, not a traceback
    assert (
        f"error: {tmp_path / 'nowhere'}: no such run or sweep directory" in capsys.readouterr().err
    )


def test_a_failed_sweep_job_is_named_failed_with_its_error(tmp_path, shapes_root) -> None:
    """A real sweep whose two jobs fail on a bad value: each row says failed, the notes name
    the job and its error, not "failed or still running"; a finished run beside them is not."""
    run_cli("train", ["-m", "schedule=smoke", f"paths.shapes_dir={shapes_root}",
                      "hydra.sweep.dir=sweep", "data.val_batch_size=0,-1"], tmp_path,
            fails=True)  # fmt: skip
    root = tmp_path / "sweep"
    make_run(root / "2", [*COMMON, "data.val_batch_size=2"], metrics(0.3))
    report = write_report([root]).read_text()
    rows = table(report)
    assert [r[0] for r in rows] == ["0", "1", "2"]
    assert [r[9] for r in rows] == ["failed", "failed", "0"]  # the epochs column
    for job, value in (("0", "0"), ("1", "-1")):
        assert (
            f"{job} failed: ConfigError: invalid config (1 problem): - data.val_batch_size="
            in report
        )
        assert f"data.val_batch_size={value}" in rows[int(job)][1]
    assert "2 failed" not in report


def _per_category(run: Path, bbox: dict[str, float], pq: dict[str, float] | None = None) -> None:
    """``run/metrics_per_category.json`` with categories 1.. named as ``bbox`` / ``pq`` list them."""
    import json

    content = {"bbox": [{"category_id": i, "name": n, "AP": v, "AR_100": v}
                        for i, (n, v) in enumerate(bbox.items(), 1)]}  # fmt: skip
    if pq is not None:
        content["panoptic"] = [{"category_id": i, "name": n, "isthing": True, "PQ": v, "SQ": v,
                                "RQ": v, "tp": 1, "fp": 0, "fn": 0}
                               for i, (n, v) in enumerate(pq.items(), 1)]  # fmt: skip
    run.mkdir(parents=True, exist_ok=True)
    (run / "metrics_per_category.json").write_text(json.dumps(content))


def _section(report: str, title: str) -> list[list[str]]:
    """The rows (header first) of the per-category section ``title``, bold marks kept."""
    body = report.split(f"## {title}\n")[1].strip().split("\n\n")[0]
    return [[c.strip() for c in row.strip("|").split("|")] for row in body.splitlines()
            if not row.startswith("|---")]  # fmt: skip


def test_each_categorys_ap_and_pq_in_a_row_with_a_column_per_run(sweep, tmp_path, capsys) -> None:
    root, _ = sweep
    _per_category(root / "0", {"ellipse": 0.5, "star": -1.0})
    _per_category(root / "1", {"ellipse": 0.25, "star": 0.125, "cross": 0.0})
    # a staged run keeps the file in its last stage's folder; the run has moved since
    staged = make_staged_run(tmp_path / "panoptic" / "2026-01-03_00-00-00", tmp_path / "gone")
    _per_category(staged / "stage2_masks", {"ellipse": 0.5}, {"ellipse": 0.75, "sky": 0.5})
    main([str(root), str(staged), "--out", str(tmp_path / "cmp")])
    report = (tmp_path / "cmp" / "report.md").read_text()
    names = [row[0] for row in table(report)]  # the runs' names in the summary table
    assert names[2] == "panoptic/2026-01-03_00-00-00"
    assert _section(report, "Box AP per category") == [
        ["category", *names],
        ["ellipse", "**0.5000**", "0.2500", "**0.5000**"],
        ["star", "-1.0000", "**0.1250**", "–"],
        ["cross", "–", "0.0000", "–"],  # one value: nothing to compare, no bold
    ]
    assert _section(report, "PQ per category") == [
        ["category", *names],
        ["ellipse", "–", "–", "0.7500"],
        ["sky", "–", "–", "0.5000"],
    ]
    printed = capsys.readouterr().out
    assert f"| {names[0]} |" in printed and "per category" not in printed  # the summary only
    plain = write_report([root / "0"], tmp_path / "one")  # runs without the file: no section
    (root / "0" / "metrics_per_category.json").unlink()
    assert "per category" not in write_report([root / "0"], tmp_path / "none").read_text()
    assert "## Box AP per category" in plain.read_text()
