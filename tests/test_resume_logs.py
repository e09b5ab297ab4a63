"""What a resume leaves in run folders: the earlier CSV log kept beside the new one (same
folder), a record of the run continued (new folder)."""

from __future__ import annotations

import json

from detr_lightning.resume_logs import (
    RECORD,
    keep_interrupted_log,
    record_resumed_from,
    resumed_from,
)
from detr_lightning.run_dirs import read_val_curve


def test_an_interrupted_stages_log_is_kept_and_read_with_the_resumed_one(tmp_path) -> None:
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    head = "epoch,step,time/elapsed_s,val/AP\n"
    (csv_dir / "metrics.csv").write_text(head + "0,9,30.0,0.1\n1,19,60.0,0.2\n")
    assert keep_interrupted_log(csv_dir) == csv_dir / "metrics_part1.csv"
    assert keep_interrupted_log(csv_dir) is None  # nothing left to keep
    # the resumed process (from the step-19 checkpoint) writes a fresh metrics.csv
    (csv_dir / "metrics.csv").write_text(head + "2,29,90.0,0.3\n")
    curve = read_val_curve(csv_dir / "metrics.csv")
    assert [(p["epoch"], p["val/AP"], p["time/elapsed_s"]) for p in curve] == [
        (0.0, 0.1, 30.0), (1.0, 0.2, 60.0), (2.0, 0.3, 90.0)]  # fmt: skip


def test_a_resume_into_a_new_folder_records_the_run_and_step_it_continues(tmp_path) -> None:
    earlier, later = tmp_path / "outputs" / "t1", tmp_path / "outputs" / "t2"
    ckpt = earlier / "checkpoints" / "last.ckpt"
    assert record_resumed_from(earlier, str(ckpt), 19) is None  # its own folder: the log goes on
    assert not (earlier / RECORD).exists()
    assert record_resumed_from(later, str(tmp_path / "kept" / "a.ckpt"), 19) is None  # no run's
    assert record_resumed_from(later, str(ckpt), 19) == later / RECORD
    assert json.loads((later / RECORD).read_text()) == {
        "run": str(earlier), "checkpoint": str(ckpt), "global_step": 19}  # fmt: skip
    earlier.mkdir(parents=True)
    assert resumed_from(later) == (later.parent / "t1", 19)
    assert resumed_from(earlier) is None


def test_paths_typed_relative_are_recorded_resolved(tmp_path, monkeypatch) -> None:
    """``ckpt_path=../outputs/t1/...`` was recorded as ``<cwd>/../outputs/t1/...``, and its own
    folder given with ``..`` counted as another run's (a record of itself written there)."""
    earlier, later = tmp_path / "outputs" / "t1", tmp_path / "outputs" / "t2"
    (tmp_path / "shell").mkdir()
    monkeypatch.chdir(tmp_path / "shell")
    typed = "../outputs/t1/checkpoints/last.ckpt"
    assert record_resumed_from(earlier, typed, 5) is None
    assert not (earlier / RECORD).exists()
    assert record_resumed_from("../outputs/t2", typed, 5) == later / RECORD
    assert json.loads((later / RECORD).read_text()) == {
        "run": str(earlier), "checkpoint": str(earlier / "checkpoints" / "last.ckpt"),
        "global_step": 5}  # fmt: skip


def test_the_continued_run_is_found_after_outputs_moved_and_a_gone_one_is_named(
    tmp_path, caplog
) -> None:
    moved = tmp_path / "moved"
    (moved / "t1").mkdir(parents=True)
    (moved / "t2").mkdir()
    record = {"run": str(tmp_path / "outputs" / "t1"), "checkpoint": "x", "global_step": 7}
    (moved / "t2" / RECORD).write_text(json.dumps(record))
    assert resumed_from(moved / "t2") == (moved / "t1", 7)  # beside it, by name

    (moved / "t1").rmdir()
    assert resumed_from(moved / "t2") is None
    assert f"the run it resumed ({tmp_path / 'outputs' / 't1'}) is gone" in caplog.text
    (moved / "t2" / RECORD).write_text('{"run": "t1"')  # torn by hand
    assert resumed_from(moved / "t2") is None
    assert f"{moved / 't2' / RECORD}: not a readable record" in caplog.text
