"""Reading run directories: validation curves from CSV logs, a staged run through its stages."""

from __future__ import annotations

import pytest
from fake_runs import COMMON, make_run, make_staged_run, metrics

from detr_lightning.resume_logs import record_resumed_from
from detr_lightning.run_dirs import load_run, read_val_curve, wall_seconds


def test_val_curve_merges_the_rows_of_one_step(tmp_path) -> None:
    for job, ap in (("0", 0.1), ("1", 0.2)):
        overrides = [*COMMON, f"model.net.transformer.num_decoder_layers={int(job) + 1}"]
        make_run(
            tmp_path / job, overrides, metrics(ap, ap_s=-1.0), [(0, ap, 20.0), (1, 2 * ap, 40.0)]
        )
    curve = read_val_curve(tmp_path / "1" / "csv" / "metrics.csv")
    assert curve == [
        {"val/AP": 0.2, "epoch": 0.0, "time/elapsed_s": 20.0, "step": 2.0},
        {"val/AP": 0.4, "epoch": 1.0, "time/elapsed_s": 40.0, "step": 5.0},
    ]
    run = load_run(tmp_path / "0")
    assert run.overrides == [*COMMON, "model.net.transformer.num_decoder_layers=1"]
    assert run.metrics["AP_S"] == -1.0 and run.info["global_step"] == 9


def test_a_staged_run_is_one_curve_through_its_stages_logs(tmp_path) -> None:
    """Stage 2's points follow stage 1's by its epochs and minutes; the stage folders are found
    by name inside the run after it has moved."""
    run = make_staged_run(tmp_path / "outputs" / "2026-01-03_00-00-00", tmp_path / "elsewhere")
    loaded = load_run(run)
    assert loaded.stage_epochs == [3, 2]
    assert [(p["epoch"], p["time/elapsed_s"], p.get("val/PQ")) for p in loaded.curve] == [
        (0.0, 50.0, None), (1.0, 100.0, None), (2.0, 150.0, None),  # stage 1 as logged
        (3.0, 180.0 + 50.0, 0.2), (4.0, 180.0 + 100.0, pytest.approx(0.3)),  # after 3 ep, 180 s
    ]  # fmt: skip
    assert wall_seconds(loaded) == 60.0 * (3.0 + 2.0)  # the stages' minutes, tests included


def test_a_staged_runs_per_category_file_is_its_own_else_its_last_stages(tmp_path) -> None:
    import json

    run = make_staged_run(tmp_path / "outputs" / "2026-01-03_00-00-00", tmp_path / "elsewhere")
    for folder, ap in (("stage1_detector", 0.25), ("stage2_masks", 0.5)):
        (run / folder / "metrics_per_category.json").write_text(json.dumps({"bbox": [ap]}))
    assert load_run(run).per_category == {"bbox": [0.5]}  # the last stage's, the run moved
    (run / "metrics_per_category.json").write_text(json.dumps({"bbox": [0.75]}))
    assert load_run(run).per_category == {"bbox": [0.75]}  # one at the run's top comes first


def test_a_stage_without_its_log_ends_the_curve_and_counts_as_unknown(tmp_path) -> None:
    run = make_staged_run(tmp_path / "2026-01-03_00-00-00", tmp_path / "2026-01-03_00-00-00")
    (run / "stage2_masks" / "csv" / "metrics.csv").unlink()
    loaded = load_run(run)
    assert [p["epoch"] for p in loaded.curve] == [0.0, 1.0, 2.0]  # stage 1's points only
    assert loaded.stage_epochs == [3, None]  # the report writes "3+?"


def test_a_torn_metrics_json_or_csv_row_leaves_the_rest_of_the_run_readable(tmp_path, caplog):
    make_run(tmp_path / "0", COMMON, metrics(0.3), [(0, 0.1, 20.0), (1, 0.2, 40.0)])
    log = tmp_path / "0" / "csv" / "metrics.csv"
    with open(log, "a") as f:  # a killed writer's last row, cut inside a number
        f.write("2,8,,,0.3e\n")
    (tmp_path / "0" / "metrics.json").write_text('{"AP": 0.3, "AP50"')
    run = load_run(tmp_path / "0")
    assert run.metrics == {} and run.overrides == COMMON
    assert [p["val/AP"] for p in run.curve] == [0.1, 0.2]
    assert f"{tmp_path / '0' / 'metrics.json'}: not readable json" in caplog.text
    assert f"{log}: skipped a row" in caplog.text


def test_a_resumed_run_is_one_curve_through_the_run_it_continues(tmp_path) -> None:
    """The earlier run's validations up to the step resumed from (3 epochs of 3 steps: step 5,
    the end of epoch 1), then the resumed run's; its record loops back to nothing."""
    earlier = make_run(tmp_path / "t1", COMMON, None, [(0, 0.1, 20.0), (1, 0.2, 40.0),
                                                       (2, 0.25, 60.0)])  # fmt: skip
    later = make_run(tmp_path / "t2", COMMON, metrics(0.4), [(2, 0.3, 61.0), (3, 0.4, 81.0)])
    record_resumed_from(later, str(earlier / "checkpoints" / "last.ckpt"), 5)
    run = load_run(later)
    assert run.resumed == (earlier, 5)
    assert [(p["epoch"], p["val/AP"]) for p in run.curve] == [
        (0.0, 0.1), (1.0, 0.2), (2.0, 0.3), (3.0, 0.4)]  # fmt: skip
    assert wall_seconds(run) == 81.0  # the resumed clock goes on from the checkpoint's
    assert [p["val/AP"] for p in load_run(earlier).curve] == [0.1, 0.2, 0.25]  # itself, alone

    record_resumed_from(earlier, str(later / "checkpoints" / "last.ckpt"), 2)  # a loop, by hand
    assert [p["val/AP"] for p in load_run(later).curve] == [0.1, 0.2, 0.3, 0.4]
