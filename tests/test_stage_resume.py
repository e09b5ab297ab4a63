"""Stage bookkeeping files: written atomically, and a torn one is named instead of crashing."""

from __future__ import annotations

import json

import pytest
import torch

from detr_lightning.stage_resume import (
    DONE,
    elapsed_before,
    finished_stage,
    mark_done,
)


def test_done_file_round_trips_and_a_torn_metrics_json_is_named(tmp_path) -> None:
    mark_done(tmp_path, "/r/stage1/checkpoints/best.ckpt", 9.5)
    assert json.loads((tmp_path / DONE).read_text())["minutes"] == 9.5
    assert [p.name for p in tmp_path.iterdir()] == [DONE]  # no temp file left
    (tmp_path / "metrics.json").write_text('{"AP": 0.41, "run": {"epochs": 3}}')
    assert finished_stage(tmp_path) == ({"AP": 0.41}, 9.5)
    (tmp_path / "metrics.json").write_text('{"AP": 0.4')
    with pytest.raises(ValueError, match=r"metrics.json: not readable json .* Fix: delete it"):
        finished_stage(tmp_path)


def test_elapsed_before_reads_the_checkpoints_clock(tmp_path) -> None:
    torch.save({"callbacks": {"ElapsedTime": {"elapsed_s": 12.5}}}, tmp_path / "a.ckpt")
    torch.save({"callbacks": {}}, tmp_path / "b.ckpt")
    assert elapsed_before(str(tmp_path / "a.ckpt")) == 12.5
    assert elapsed_before(str(tmp_path / "b.ckpt")) == 0.0


def test_a_stage_with_either_marker_is_finished(tmp_path):
    """Docstring: finished = 'its stage_done.json or its own metrics.json'."""
    from detr_lightning.stage_resume import DONE, stage_finished

    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for d in (a, b, c):
        d.mkdir()
    (a / DONE).write_text("{}")
    (b / "metrics.json").write_text("{}")
    assert stage_finished(a) and stage_finished(b) and not stage_finished(c)


def test_resume_point_refuses_a_checkpoint_outside_a_stage_checkpoints_folder(tmp_path):
    """Docstring: a checkpoint in <run>/<one of folders>/checkpoints/ only; StageResumeError
    otherwise. Each of the two conditions alone must refuse."""
    import pytest

    from detr_lightning.stage_resume import StageResumeError, resume_point

    folders = ["1_detector", "2_masks"]
    good = tmp_path / "run" / "2_masks" / "checkpoints" / "last.ckpt"
    assert resume_point(str(good), folders) == (tmp_path / "run", 1)
    with pytest.raises(StageResumeError):  # a stage folder, but not its checkpoints/
        resume_point(str(tmp_path / "run" / "2_masks" / "other" / "last.ckpt"), folders)
    with pytest.raises(StageResumeError):  # checkpoints/, but of no stage folder
        resume_point(str(tmp_path / "run" / "3_x" / "checkpoints" / "last.ckpt"), folders)
