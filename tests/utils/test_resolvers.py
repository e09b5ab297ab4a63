"""The run-directory resolvers: every entry point's run and sweep folder is claimed fresh, so two
runs started in the same second get two folders; predict's and visualize's ``output_dir=`` is
taken as given."""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import sys
from pathlib import Path

import pytest
from cli import run_cli
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from omegaconf import OmegaConf

from detr_lightning import utils
from detr_lightning.utils import (
    claim_run_dirs_for_jobs_only,
    conf_dir,
    fresh_dir,
    prints_only,
    runs_one_job,
)


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


@pytest.mark.parametrize("entry", ["train", "eval", "predict", "visualize", "export"])
@pytest.mark.parametrize("shown", ["hydra", "all"])
def test_printing_the_resolved_hydra_config_leaves_no_folder(entry, shown, tmp_path) -> None:
    """``--cfg hydra --resolve`` resolved hydra.run.dir and hydra.sweep.dir, and fresh_dir made
    both: two empty folders per look at the config."""
    out = run_cli(entry, ["--cfg", shown, "--resolve"], tmp_path, timeout=120)
    prefix = "" if entry == "train" else f"{entry}_"
    assert re.search(rf"^ +dir: outputs/shapes/{prefix}\d{{4}}-\d\d-\d\d_[\d-]+$", out, re.M), out
    assert list(tmp_path.iterdir()) == []


def test_a_printing_command_line_names_the_free_folder_and_makes_none(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(utils, "_claiming", True)  # restored after the test
    taken = tmp_path / "outputs" / "shapes" / "T"
    taken.mkdir(parents=True)
    ask = claim_run_dirs_for_jobs_only(lambda path: fresh_dir(str(path)))
    for argv, made in ((["--cfg", "hydra", "--resolve"], ["T"]), (["x=1"], ["T", "T_1"])):
        monkeypatch.setattr(utils, "_claimed", {})
        monkeypatch.setattr(sys, "argv", ["train", *argv])
        assert ask(taken) == f"{taken}_1"  # what the run would get, made only for a run
        assert sorted(p.name for p in taken.parent.iterdir()) == made
    monkeypatch.setattr(sys, "argv", ["train", "--info"])
    assert ask(tmp_path / "new" / "T") == str(tmp_path / "new" / "T")
    assert not (tmp_path / "new").exists()  # nor its parents


@pytest.mark.parametrize(
    ("argv", "printing"),
    [(["--cfg", "job"], True), (["--cfg=hydra", "--resolve"], True), (["-c", "all"], True),
     (["--help"], True), (["-i"], True), (["-m", "x=1,2"], False), (["x=--cfg"], False),
     ([], False), (["-cjob"], True), (["--cf", "job", "--resol"], True), (["--inf"], True),
     (["-hx=1"], True), (["--version"], True), (["--cfg", "nonsense"], True),
     (["--multi", "x=1,2"], False), (["-sc", "install=bash"], True)],
)  # fmt: skip
def test_which_command_lines_only_print(argv: list[str], printing: bool, capsys) -> None:
    """Every spelling Hydra's parser takes: attached values, abbreviated long flags; a line it
    refuses (``--cfg nonsense``) runs nothing either. Nothing is printed while deciding."""
    assert prints_only(argv) is printing
    assert capsys.readouterr() == ("", "")


@pytest.mark.parametrize(
    ("argv", "one_job"),
    [([], True), (["x=1"], True), (["-m", "x=1,2"], False), (["--multi", "x=1,2"], False),
     (["-mx=1,2"], False), (["-cjob"], False), (["--cfg", "nonsense"], False)],
)  # fmt: skip
def test_which_command_lines_run_one_job(argv: list[str], one_job: bool) -> None:
    assert runs_one_job(argv) is one_job
