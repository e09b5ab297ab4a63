"""``ckpt_path=last|auto``: the newest ``last.ckpt`` of the experiment, for train, eval and
predict, without typing a path; a clear error when there is none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra.types import RunMode
from hydra_jobs import compose_job

from detr_lightning.checkpointing.locate import NoCheckpointFound, resolve_ckpt_path
from detr_lightning.utils.config_check import check_config


def _last(root: Path, experiment: str, run: str, mtime: float) -> Path:
    path = root / "outputs" / experiment / run / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"ckpt")
    os.utime(path, (mtime, mtime))
    return path


def test_newest_last_ckpt_by_mtime_of_this_experiment_only(tmp_path) -> None:
    # The run names sort the other way round than their ages: mtime decides, not the name.
    _last(tmp_path, "shapes", "2026-01-02_00-00-00", 1_000)
    newest = _last(tmp_path, "shapes", "2026-01-01_00-00-00", 3_000)
    _last(tmp_path, "other", "2026-01-03_00-00-00", 9_000)
    tmp = newest.parent / ".last.ckpt.abc123.tmp"  # a killed writer's leftover is ignored
    tmp.write_bytes(b"torn")
    os.utime(tmp, (8_000, 8_000))
    for value in ("last", "auto"):
        assert resolve_ckpt_path(value, str(tmp_path), "shapes") == str(newest)
    assert resolve_ckpt_path("a/b.ckpt", str(tmp_path), "shapes") == "a/b.ckpt"


def test_none_found_last_fails_auto_starts_fresh(tmp_path) -> None:
    with pytest.raises(NoCheckpointFound, match=r"ckpt_path=last: no checkpoint to resume") as err:
        resolve_ckpt_path("last", str(tmp_path), "shapes")
    assert str(tmp_path / "outputs" / "shapes" / "*" / "checkpoints" / "last.ckpt") in str(
        err.value
    )
    assert resolve_ckpt_path("auto", str(tmp_path), "shapes") is None  # training: from scratch
    with pytest.raises(NoCheckpointFound):  # evaluation needs weights
        resolve_ckpt_path("auto", str(tmp_path), "shapes", required=True)


@pytest.mark.parametrize(("config", "stage"), [("train", "fit"), ("eval", "test"),
                                               ("predict", "predict")])  # fmt: skip
def test_entry_point_configs_resolve_last(tmp_path, config: str, stage: str) -> None:
    newest = _last(tmp_path, "shapes", "2026-01-01_00-00-00", 5_000)
    _last(tmp_path, "shapes", "2026-01-02_00-00-00", 4_000)
    cfg = compose_job(["ckpt_path=last"], tmp_path, name=config)
    check_config(cfg, stage)
    assert cfg.ckpt_path == str(newest)


def test_auto_without_checkpoint_trains_from_scratch(tmp_path) -> None:
    cfg = compose_job(["ckpt_path=auto"], tmp_path)
    check_config(cfg, "fit")
    assert cfg.ckpt_path is None


def _sweep_job_cfg(tmp_path: Path, value: str, name: str = "train"):
    return compose_job([f"ckpt_path={value}"], tmp_path, name, {"mode": RunMode.MULTIRUN})


def test_a_sweep_job_resumes_its_own_folder_only(tmp_path) -> None:
    other = _last(tmp_path, "shapes", "2026-01-01_00-00-00", 9_000)  # another job's, newest
    cfg = _sweep_job_cfg(tmp_path, "auto")
    check_config(cfg, "fit")
    assert cfg.ckpt_path is None  # not the other configuration's run
    with pytest.raises(NoCheckpointFound, match="sweep job's folder"):
        check_config(_sweep_job_cfg(tmp_path, "last"), "fit")
    own = tmp_path / "run" / "checkpoints" / "last.ckpt"  # compose_job's run folder
    own.parent.mkdir(parents=True)
    own.write_bytes(b"ckpt")
    for value in ("auto", "last"):
        cfg = _sweep_job_cfg(tmp_path, value)
        check_config(cfg, "fit")
        assert cfg.ckpt_path == str(own)
    cfg = _sweep_job_cfg(tmp_path, "last", name="eval")  # a sweep over evaluation settings
    check_config(cfg, "test")
    assert cfg.ckpt_path == str(other)
