"""train and eval jobs record the error they end with in failed.json (for report); a job run
again removes it; predict, visualize and export record nothing (their refused runs must leave
their folder as it was: tests/utils/test_unread_overrides.py, tests/test_predict.py)."""

from __future__ import annotations

import pytest

from detr_lightning import job_failures
from detr_lightning.job_failures import read_failure, records_failures
from detr_lightning.utils import job_errors
from detr_lightning.utils.config_check import ConfigError
from detr_lightning.utils.job_errors import exit_on_explained_errors


def _job(err: BaseException | None):
    @exit_on_explained_errors
    @records_failures
    def main(cfg: object) -> None:
        if err is not None:
            raise err

    return main


def test_a_failing_job_leaves_failed_json_and_a_job_run_again_removes_it(tmp_path, monkeypatch):
    """The explained error's message, or a bug's type and message, is what report names."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.setattr(job_failures, "job_dir", lambda: tmp_path)
    monkeypatch.setattr(job_errors, "_in_sweep", lambda: True)
    with pytest.raises(job_errors.JobFailed):
        _job(ConfigError("bad value\nsecond line"))(None)
    assert read_failure(tmp_path) == "ConfigError: bad value"
    with pytest.raises(job_errors.JobFailed):
        _job(ConfigError("invalid config (2 problems):\n  - a=1: bad\n  - b=2: bad"))(None)
    assert read_failure(tmp_path) == "ConfigError: invalid config (2 problems): - a=1: bad ..."
    with pytest.raises(KeyError):
        _job(KeyError("x"))(None)
    assert read_failure(tmp_path) == "KeyError: 'x'"
    _job(None)(None)  # the job run again (a resumed sweep job) succeeds
    assert not (tmp_path / "failed.json").exists()


def test_only_the_entry_points_report_lists_record_failures():
    from detr_lightning import eval, export, predict, train, visualize

    def wrapped(module) -> set[str]:  # the decorators' functions between main and the task
        names, fn = set(), getattr(module, "_main", module.main)  # predict: _main is Hydra's
        while fn is not None:
            names.add(fn.__code__.co_qualname)
            fn = getattr(fn, "__wrapped__", None)
        return names

    for module in (train, eval):
        assert "records_failures.<locals>.task" in wrapped(module), module.__name__
    for module in (predict, visualize, export):
        assert "records_failures.<locals>.task" not in wrapped(module), module.__name__
