"""Stage bookkeeping files: written atomically, and a torn one is named instead of crashing."""

from __future__ import annotations

import json

import pytest

from detr_lightning.stage_resume import DONE, finished_stage, mark_done


def test_done_file_round_trips_and_a_torn_metrics_json_is_named(tmp_path) -> None:
    mark_done(tmp_path, "/r/stage1/checkpoints/best.ckpt", 9.5)
    assert json.loads((tmp_path / DONE).read_text())["minutes"] == 9.5
    assert [p.name for p in tmp_path.iterdir()] == [DONE]  # no temp file left
    (tmp_path / "metrics.json").write_text('{"AP": 0.41, "run": {"epochs": 3}}')
    assert finished_stage(tmp_path) == ({"AP": 0.41}, 9.5)
    (tmp_path / "metrics.json").write_text('{"AP": 0.4')
    with pytest.raises(ValueError, match=r"metrics.json: not readable json .* Fix: delete it"):
        finished_stage(tmp_path)
