"""Multi-stage training (``stages:``, head=panoptic): every panoptic preset and its stages
compose and instantiate; a short two-stage CPU run trains stage 2 on stage 1's frozen detector."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli import INFER_TINY, TINY, run_cli, run_dirs
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from hydra_jobs import compose_job
from omegaconf import OmegaConf, open_dict

from detr_lightning.data.shapes import generate_shapes_dataset
from detr_lightning.detr.segmentation import DETRsegm
from detr_lightning.evaluation import write_metrics_json
from detr_lightning.evaluation.panoptic import PQ_KEYS
from detr_lightning.stages import run_stages, stage_entry, stage_overrides
from detr_lightning.utils import conf_dir
from detr_lightning.utils.config_check import ConfigError

PANOPTIC = ["shapes_panoptic", "r50_panoptic", "dc5_r50_panoptic", "r101_panoptic"]


def _compose(overrides: list[str]):
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        return compose("train", overrides=overrides)


def _on_meta(cfg):
    with open_dict(cfg):
        cfg.model.num_classes = 134
        if "pretrained" in cfg.model.net.backbone:
            cfg.model.net.backbone.pretrained = False
    with torch.device("meta"):
        return instantiate(cfg.model, _convert_="all")


@pytest.mark.parametrize("name", PANOPTIC)
def test_panoptic_presets_and_their_stages_compose_and_instantiate(name: str) -> None:
    base = [f"experiment={name}"]
    cfg = _compose(base)
    assert cfg.task == "panoptic" and "Panoptic" in cfg.data._target_
    lit = _on_meta(cfg)  # the joint model (stages=null)
    assert isinstance(lit.net, DETRsegm) and not lit.net.freeze_detr and lit.net.matcher
    assert "masks" in lit.criterion.losses
    assert lit.criterion.weight_dict["loss_mask"] == lit.criterion.weight_dict["loss_dice"] == 1
    # The paper presets keep and test the final epoch (and hand it to the mask head), as the
    # official recipe; the CPU demo keeps the best.
    paper = name != "shapes_panoptic"
    assert lit.val_panoptic is not None
    assert cfg.callbacks.model_checkpoint.monitor == (None if paper else "val/PQ")
    (first, one), (second, two) = stage_overrides(cfg)
    assert (first, second) == ("detector", "masks")
    detector = _compose([*base, *one, "stages=null"])
    assert detector.stages is None
    assert detector.callbacks.model_checkpoint.monitor == (None if paper else "val/AP")
    lit = _on_meta(detector)
    assert not isinstance(lit.net, DETRsegm) and "masks" not in lit.criterion.losses
    masks = _compose([*base, *two, "stages=null"])
    lit = _on_meta(masks)
    assert isinstance(lit.net, DETRsegm) and lit.net.freeze_detr
    assert not any(p.requires_grad for p in lit.net.detr.parameters())
    if name == "shapes_panoptic":  # wall budgets: 9 + 8 minutes, hard stops within 20 in all
        assert (detector.model.lr_schedule.budget_min, masks.model.lr_schedule.budget_min) == (
            9, 8)  # fmt: skip
        weights = (1440, 60, 1, 1 / 60)  # DD:HH:MM:SS -> minutes
        minutes = [
            sum(int(v) * w for v, w in zip(c.trainer.max_time.split(":"), weights, strict=True))
            for c in (detector, masks)
        ]
        assert minutes == [10, 9] and sum(minutes) < 20
    else:  # the paper's recipe: the detector's 500 epochs, then 25 epochs with a drop at 15
        assert (detector.trainer.max_epochs, masks.trainer.max_epochs) == (500, 25)
        assert list(masks.model.lr_schedule.drop_epochs) == [15]
        assert masks.trainer.strategy is not None and masks.logger.wandb
        assert masks.model.net.backbone.dilation == name.startswith("dc5")
        assert masks.model.net.backbone.name == ("resnet101" if "101" in name else "resnet50")


def test_stage_overrides_accept_mappings_with_dropped_entries_and_lists() -> None:
    cfg = OmegaConf.create({"stages": {"a": {"x": "k=1", "y": None}, "b": ["m=2", "n=3"]}})
    assert stage_overrides(cfg) == [("a", ["k=1"]), ("b", ["m=2", "n=3"])]


def test_a_stage_entry_is_named_as_an_override_that_drops_it(tmp_path: Path) -> None:
    """The fix a composition error gives (``<entry>=null``) must itself be a Hydra override that
    drops the entry: a mapping's label, a list's index (Hydra has no ``[i]`` syntax)."""
    (tmp_path / "c.yaml").write_text("stages:\n  a: {x: k=1, y: m=2}\n  b: [m=2, n=3]\n")
    with initialize_config_dir(str(tmp_path), version_base="1.3"):
        cfg = compose("c")
        assert (
            stage_entry(cfg, "a", "m=2") == "stages.a.y"
            and stage_entry(cfg, "b", "n=3") == "stages.b.1"
        )
        for entry, left in (("stages.a.y", ("a", ["k=1"])), ("stages.b.1", ("b", ["m=2"]))):
            assert left in stage_overrides(compose("c", overrides=[f"{entry}=null"]))


def test_head_panoptic_joint_training_is_one_stage_away() -> None:
    cfg = _compose(["experiment=shapes_panoptic", "stages=null"])
    assert cfg.stages is None and not cfg.model.segmentation.freeze_detr


def _run_stages_in_app(overrides: list[str], train_one) -> None:
    """``run_stages`` inside the job of ``overrides`` (it composes each stage with the command
    line's overrides, which it reads from Hydra's config)."""
    cfg = compose_job(overrides)
    with initialize_config_dir(conf_dir(), version_base="1.3"):  # Hydra's, as in the app
        run_stages(cfg, train_one)


@pytest.mark.parametrize(
    ("overrides", "entry"),
    [([], "stages.detector.budget"), (["stages.detector.budget=null"], "stages.masks.schedule")],
)
def test_a_stage_override_that_does_not_apply_stops_the_run_before_any_stage_trains(
    tmp_path: Path, overrides: list[str], entry: str
) -> None:
    """schedule=smoke has no budget_min, which both stages of shapes_panoptic set: the error names
    the stage's entry and how to drop it, before stage 1 trains (also when only stage 2's entry
    does not apply)."""
    trained = []
    base = ["experiment=shapes_panoptic", "schedule=smoke", f"paths.output_dir={tmp_path}"]
    with pytest.raises(ConfigError) as err:
        _run_stages_in_app([*base, *overrides], lambda stage_cfg: trained.append(stage_cfg))
    assert trained == []
    msg = str(err.value)
    assert "model.lr_schedule.budget_min=" in msg and f"({entry})" in msg
    assert f"Fix: drop it for this run with {entry}=null" in msg


def test_staged_metrics_json_records_each_stages_epochs_and_step(tmp_path: Path) -> None:
    """The run's metrics.json lists, per stage, the epochs and global step of that stage: from
    its own metrics.json, or, for the preset's detector stage (test=false: no metrics.json), from
    its last.ckpt (Lightning's ``epoch`` is the last epoch's index). Stages faked: each "trains"
    by writing what a one-stage run leaves."""
    progress = {"detector": (7, 140), "masks": (3, 60)}  # epochs, global_step per stage

    def train_one(stage_cfg) -> dict[str, float]:
        stage_dir = Path(stage_cfg.paths.output_dir)
        name = stage_dir.name.split("_", 1)[1]
        (stage_dir / "checkpoints").mkdir(parents=True)
        ckpt = stage_dir / "checkpoints" / "best.ckpt"
        ckpt.write_bytes(b"")
        epochs, step = progress[name]
        torch.save(
            {"epoch": epochs - 1, "global_step": step}, stage_dir / "checkpoints" / "last.ckpt"
        )
        if not stage_cfg.test:
            return {}
        write_metrics_json(stage_dir, {"AP": 0.1}, checkpoint=str(ckpt), epochs=epochs,
                           global_step=step)  # fmt: skip
        return {"AP": 0.1}

    _run_stages_in_app(["experiment=shapes_panoptic", f"paths.output_dir={tmp_path / 'run'}"],
                       train_one)  # fmt: skip
    stages = json.loads((tmp_path / "run" / "metrics.json").read_text())["run"]["stages"]
    assert list(stages) == ["detector", "masks"]
    assert not (tmp_path / "run" / "stage1_detector" / "metrics.json").exists()
    for name, (epochs, step) in progress.items():
        assert stages[name]["epochs"] == epochs and stages[name]["global_step"] == step
        assert stages[name]["checkpoint"].endswith(f"_{name}/checkpoints/best.ckpt")


def test_two_stage_cpu_run_freezes_stage_one_detector(tmp_path: Path) -> None:
    root = generate_shapes_dataset(tmp_path / "shapes", train=8, val=4)
    out = run_cli("train", [
        "experiment=shapes_panoptic", f"paths.shapes_dir={root}", *TINY, "schedule=smoke",
        "stages.detector.budget=null", "stages.masks.schedule=null",  # smoke: no budget
    ], tmp_path)  # fmt: skip
    assert "=== stage 1/2: detector" in out and "=== stage 2/2: masks" in out
    run = run_dirs(out)[-1]
    summary = json.loads((run / "metrics.json").read_text())
    assert set(PQ_KEYS) | {"AP", "segm_AP"} <= set(summary)
    stages = summary["run"]["stages"]
    assert list(stages) == ["detector", "masks"]
    # one epoch of 8 images / batch 4 = 2 steps each; the detector (test=false) has them from
    # its last.ckpt, the masks stage from its metrics.json
    assert [(s["epochs"], s["global_step"]) for s in stages.values()] == [(1, 2), (1, 2)]
    assert f"initialised the detector from {stages['detector']['checkpoint']}" in out
    first = torch.load(stages["detector"]["checkpoint"], map_location="cpu")["state_dict"]
    second = torch.load(stages["masks"]["checkpoint"], map_location="cpu")["state_dict"]
    detector = {k: v for k, v in first.items() if k.startswith("net.")}
    assert detector and not any(k.startswith("net.detr.") for k in detector)
    # Stage 2 trained the mask head only: its detector is stage 1's, tensor for tensor
    # (BatchNorm statistics too: the frozen detector stays in eval mode).
    for key, value in detector.items():
        assert torch.equal(second["net.detr." + key[len("net.") :]], value), key
    assert any(k.startswith("net.mask_head.") for k in second)
    for row in ("All", "Things", "Stuff"):
        assert f"\n{row:10}|" in out


@pytest.mark.slow  # a real two-stage run (~25 s), then a re-submission and a prediction
def test_resubmitted_staged_run_is_not_retrained_and_predict_takes_its_mask_model(
    tmp_path: Path,
) -> None:
    root = generate_shapes_dataset(tmp_path / "shapes", train=8, val=4)
    data = ["experiment=shapes_panoptic", f"paths.shapes_dir={root}"]
    smoke = ["schedule=smoke", "stages.detector.budget=null", "stages.masks.schedule=null"]
    out = run_cli("train", [*data, *TINY, *smoke, "ckpt_path=auto"], tmp_path)
    run = run_dirs(out)[-1]
    assert "=== stage 2/2: masks done" in out and "resuming" not in out  # auto: from scratch
    before = json.loads((run / "metrics.json").read_text())
    again = run_cli("train", [*data, *TINY, *smoke, "ckpt_path=auto"], tmp_path)
    assert f"=== resuming the staged run {run} " in again
    assert "detector already finished" in again and "masks already finished" in again
    assert "initialised the detector" not in again and "Epoch" not in again
    after = json.loads((run / "metrics.json").read_text())
    assert {k: v for k, v in after.items() if k != "run"} == {
        k: v for k, v in before.items() if k != "run"}  # fmt: skip
    assert after["run"]["stages"]["masks"]["checkpoint"] == before["run"]["stages"]["masks"][
        "checkpoint"]  # fmt: skip
    pred = run_cli("predict", [*data, *INFER_TINY, "ckpt_path=last", f"input={root / 'val'}",
                               "draw.enabled=false"], tmp_path)  # fmt: skip
    assert f"ckpt_path=last -> {run / 'stage2_masks' / 'checkpoints' / 'last.ckpt'}" in pred
    assert (run_dirs(pred)[-1] / "predictions.json").is_file()


def test_best_checkpoint_is_the_newest_best_metric_file(tmp_path):
    """Docstring: without metrics.json, 'its newest best-metric checkpoint ... else its
    last.ckpt'. Two best files (older, newer by mtime) and last.ckpt: the newer one."""
    import os

    from detr_lightning.stages import best_checkpoint

    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for name, t in (("epoch=9-ap=0.5.ckpt", 1000), ("epoch=3-ap=0.6.ckpt", 2000),
                    ("last.ckpt", 3000)):  # fmt: skip
        (ckpts / name).write_bytes(b"x")
        os.utime(ckpts / name, (t, t))
    assert best_checkpoint(tmp_path) == str(ckpts / "epoch=3-ap=0.6.ckpt")
    for name in ("epoch=9-ap=0.5.ckpt", "epoch=3-ap=0.6.ckpt"):
        (ckpts / name).unlink()
    assert best_checkpoint(tmp_path) == str(ckpts / "last.ckpt")


def test_a_versioned_last_checkpoint_is_not_a_best_checkpoint(tmp_path):
    """Lightning versions a clashing last checkpoint as last-v1.ckpt; it is not a
    best-metric checkpoint, so the best file is still chosen even though last-v1 is newer."""
    import os

    from detr_lightning.stages import best_checkpoint

    ckpts = tmp_path / "checkpoints"
    ckpts.mkdir()
    for name, t in (("epoch=3-ap=0.6.ckpt", 1000), ("last.ckpt", 2000), ("last-v1.ckpt", 3000)):
        (ckpts / name).write_bytes(b"x")
        os.utime(ckpts / name, (t, t))
    assert best_checkpoint(tmp_path) == str(ckpts / "epoch=3-ap=0.6.ckpt")
