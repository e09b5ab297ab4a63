"""``ckpt_path=last|auto`` with a staged run (head=panoptic, ``stages:``): inference takes the
final stage's newest last.ckpt; training resumes the run in its directory, finished stages not
retrained and the interrupted one continued from its last.ckpt. Stages are trained by a fake
``train_one`` that writes checkpoint files, so each case takes well under a second."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra_jobs import compose_job

from detr_lightning.checkpointing.locate import NoCheckpointFound
from detr_lightning.stages import run_stages
from detr_lightning.utils import conf_dir
from detr_lightning.utils.config_check import ConfigError, check_config

EXP = "shapes_panoptic"  # stages: detector, masks


class Interrupted(RuntimeError):
    pass


def _ckpt(path: Path, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"ckpt")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


class FakeStages:
    """``train_one``: records each stage's config and writes its checkpoints; ``stop_in``:
    the stage name whose training is killed after its last.ckpt."""

    def __init__(self, stop_in: str | None = None) -> None:
        self.calls: list[dict] = []
        self.recipes: list[str] = []  # each stage's resume_recipe
        self.stop_in = stop_in

    def __call__(self, cfg) -> dict[str, float]:
        out = Path(cfg.paths.output_dir)
        self.calls.append({"dir": out, "ckpt_path": cfg.ckpt_path,
                           "init": cfg.model.get("init_detector")})  # fmt: skip
        self.recipes.append(cfg.resume_recipe)
        _ckpt(out / "checkpoints" / "last.ckpt")
        if out.name.endswith(str(self.stop_in)):
            raise Interrupted(out.name)
        _ckpt(out / "checkpoints" / "epoch001-AP0.5000.ckpt")
        return {"AP": 0.5, "PQ": float(len(self.calls))}


def _train(tmp: Path, run: str, ckpt_path: str, fake: FakeStages, *overrides: str):
    cfg = compose_job([f"experiment={EXP}", f"ckpt_path={ckpt_path}", *overrides], tmp)
    cfg.paths.output_dir = str(tmp / "outputs" / EXP / run)
    check_config(cfg, "fit")  # resolves ckpt_path=last|auto, as train() does
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        return run_stages(cfg, fake)


def test_auto_with_nothing_found_trains_every_stage_from_scratch(tmp_path) -> None:
    fake = FakeStages()
    _train(tmp_path, "t1", "auto", fake)
    run = tmp_path / "outputs" / EXP / "t1"
    assert [c["dir"] for c in fake.calls] == [run / "stage1_detector", run / "stage2_masks"]
    assert [c["ckpt_path"] for c in fake.calls] == [None, None]  # not "auto" per stage
    assert (run / "stage1_detector" / "stage_done.json").is_file()


def test_interrupted_second_stage_resumes_in_its_run_without_retraining_the_first(
    tmp_path,
) -> None:
    with pytest.raises(Interrupted):
        _train(tmp_path, "t1", "auto", FakeStages(stop_in="masks"))
    run = tmp_path / "outputs" / EXP / "t1"
    _ckpt(tmp_path / "outputs" / EXP / "older" / "checkpoints" / "last.ckpt", 1)  # one-stage run
    fake = FakeStages()
    metrics = _train(tmp_path, "t2", "last", fake)
    best = str(run / "stage1_detector" / "checkpoints" / "epoch001-AP0.5000.ckpt")
    assert fake.calls == [{"dir": run / "stage2_masks",
                           "ckpt_path": str(run / "stage2_masks" / "checkpoints" / "last.ckpt"),
                           "init": best}]  # fmt: skip
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["PQ"] == metrics["PQ"] == 1.0
    assert list(summary["run"]["stages"]) == ["detector", "masks"]
    assert summary["run"]["stages"]["detector"]["checkpoint"] == best
    assert not (tmp_path / "outputs" / EXP / "t2" / "stage2_masks").exists()


def test_a_checkpoint_typed_relative_is_recorded_resolved(tmp_path, monkeypatch) -> None:
    """``ckpt_path=../outputs/...`` made every stage folder and checkpoint in metrics.json and
    stage_done.json ``<cwd>/../outputs/...``: a path that names nothing from elsewhere."""
    with pytest.raises(Interrupted):
        _train(tmp_path, "t1", "auto", FakeStages(stop_in="masks"))
    (tmp_path / "shell").mkdir()
    monkeypatch.chdir(tmp_path / "shell")
    _train(tmp_path, "t2", f"../outputs/{EXP}/t1/stage2_masks/checkpoints/last.ckpt", FakeStages())
    run = tmp_path / "outputs" / EXP / "t1"
    best = {name: str(run / f"stage{i}_{name}" / "checkpoints" / "epoch001-AP0.5000.ckpt")
            for i, name in enumerate(["detector", "masks"], start=1)}  # fmt: skip
    summary = json.loads((run / "metrics.json").read_text())["run"]
    assert summary["checkpoint"] == best["masks"]
    assert {name: (s["dir"], s["checkpoint"]) for name, s in summary["stages"].items()} == {
        name: (str(Path(ckpt).parent.parent), ckpt) for name, ckpt in best.items()}  # fmt: skip
    done = json.loads((run / "stage2_masks" / "stage_done.json").read_text())
    assert done["checkpoint"] == best["masks"]


def test_killed_in_first_stage_resumes_it_then_trains_the_second(tmp_path) -> None:
    with pytest.raises(Interrupted):
        _train(tmp_path, "t1", "auto", FakeStages(stop_in="detector"))
    run = tmp_path / "outputs" / EXP / "t1"
    fake = FakeStages()
    _train(tmp_path, "t2", "auto", fake)
    last = str(run / "stage1_detector" / "checkpoints" / "last.ckpt")
    assert [(c["dir"].name, c["ckpt_path"]) for c in fake.calls] == [
        ("stage1_detector", last), ("stage2_masks", None)]  # fmt: skip
    # Finished stages are skipped on a second re-submission: nothing is trained again.
    again = FakeStages()
    _train(tmp_path, "t3", "auto", again)
    assert again.calls == []


def test_resume_recipe_config_is_for_the_stage_that_resumes(tmp_path) -> None:
    """The stage after the resumed one starts fresh: resume_recipe=config would be refused there
    (it needs a ckpt_path), so it gets the default."""
    with pytest.raises(Interrupted):
        _train(tmp_path, "t1", "auto", FakeStages(stop_in="detector"))
    fake = FakeStages()
    _train(tmp_path, "t2", "auto", fake, "resume_recipe=config")
    assert fake.recipes == ["config", "checkpoint"]


def test_checkpoint_outside_the_stage_folders_is_refused(tmp_path) -> None:
    other = _ckpt(tmp_path / "elsewhere" / "checkpoints" / "last.ckpt")
    with pytest.raises(ConfigError, match=r"stage1_detector,stage2_masks.*ckpt_path=last"):
        _train(tmp_path, "t1", str(other), FakeStages())


@pytest.mark.parametrize("config", ["predict", "eval", "visualize", "export"])
def test_inference_last_is_the_final_stage_newest_last_ckpt(tmp_path, config: str) -> None:
    root = tmp_path / "outputs" / EXP
    _ckpt(root / "a" / "stage2_masks" / "checkpoints" / "last.ckpt", 1_000)
    newest = _ckpt(root / "b" / "stage2_masks" / "checkpoints" / "last.ckpt", 2_000)
    _ckpt(root / "c" / "stage1_detector" / "checkpoints" / "last.ckpt", 3_000)  # no masks
    extra = ["input=x.png"] if config in ("predict", "visualize") else []
    cfg = compose_job([f"experiment={EXP}", "ckpt_path=last", *extra], tmp_path, config)
    check_config(cfg, "test")
    assert cfg.ckpt_path == str(newest)


def test_inference_last_without_a_final_stage_names_what_it_searched(tmp_path) -> None:
    _ckpt(tmp_path / "outputs" / EXP / "c" / "stage1_detector" / "checkpoints" / "last.ckpt")
    cfg = compose_job([f"experiment={EXP}", "ckpt_path=last"], tmp_path, "predict")
    with pytest.raises(NoCheckpointFound, match=r"stage2_masks.*ckpt_path=auto") as err:
        check_config(cfg, "predict")
    assert str(tmp_path / "outputs" / EXP / "*" / "stage2_masks" / "checkpoints") in str(err.value)
