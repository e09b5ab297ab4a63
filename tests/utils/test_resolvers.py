"""The run-directory resolvers: every entry point's run and sweep folder is claimed fresh, so two
runs started in the same second get two folders; predict's and visualize's ``output_dir=`` is
taken as given."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from omegaconf import OmegaConf

from detr_lightning import utils
from detr_lightning.utils import conf_dir, fresh_dir


def _claim(path: str, start: mp.synchronize.Event, out: mp.Queue) -> None:
    start.wait()
    out.put(fresh_dir(path))


def test_processes_asking_for_one_folder_at_once_get_one_each(tmp_path) -> None:
    path = str(tmp_path / "outputs" / "shapes" / "2026-12-07_20-51-41")
    ctx, start = mp.get_context("fork"), None
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claim, args=(path, start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    start.set()
    got = sorted(out.get(timeout=30) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert got == [path] + [f"{path}_{n}" for n in (1, 2, 3)]
    assert all(os.path.isdir(g) for g in got)


def test_the_same_path_asked_again_in_one_process_gets_the_same_folder(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(utils, "_claimed", {})
    taken = tmp_path / "run"
    taken.mkdir()
    first = fresh_dir(str(taken))
    assert first == f"{taken}_1" and fresh_dir(str(taken)) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "run_1"]


@pytest.mark.parametrize(
    ("config", "key", "folder"),
    [
        ("train", "run.dir", "outputs/shapes/T"),
        ("train", "sweep.dir", "multirun/shapes/T"),
        ("eval", "run.dir", "outputs/shapes/eval_T"),
        ("eval", "sweep.dir", "multirun/shapes/eval_T"),
        ("export", "run.dir", "outputs/shapes/export_T"),
        ("predict", "run.dir", "outputs/shapes/predict_T"),
        ("visualize", "run.dir", "outputs/shapes/visualize_T"),
    ],
)
def test_each_entry_points_folder_of_a_taken_second_gets_a_suffix(
    config, key, folder, tmp_path, monkeypatch
) -> None:
    """The folder named by the (frozen) second exists already: the run gets ``<name>_1``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(utils, "_claimed", {})
    (tmp_path / folder).mkdir(parents=True)
    try:
        with initialize_config_dir(conf_dir(), version_base="1.3"):  # registers Hydra's
            OmegaConf.register_new_resolver("now", lambda pattern: "T", replace=True)
            cfg = compose(config, overrides=["experiment=shapes"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)  # hydra.runtime.choices, as in a job
        assert OmegaConf.select(cfg.hydra, key) == f"{folder}_1"
    finally:
        setup_globals()  # Hydra's own "now" back
    assert (tmp_path / f"{folder}_1").is_dir()


def test_predicts_given_output_dir_is_taken_as_it_is(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        cfg = compose("predict", overrides=["output_dir=mine"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    assert cfg.hydra.run.dir == "mine"
    assert list(Path(tmp_path).iterdir()) == []  # no fresh folder claimed beside it


def test_a_run_directory_that_cannot_be_made_ends_the_job_with_the_fix(
    tmp_path, monkeypatch, capsys
) -> None:
    """Hydra resolves the run directory before the job's own error handling: the message alone,
    not Hydra's traceback through OmegaConf."""
    monkeypatch.setattr(utils, "_claimed", {})
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as stop:
        fresh_dir(str(tmp_path / "a_file" / "outputs" / "shapes" / "T"))
    assert stop.value.code == 1
    message = capsys.readouterr().err
    assert message.startswith(f"UnwritableFolderError: the run directory {tmp_path}/a_file/")
    assert "hydra.run.dir=DIR" in message
