"""The entry points end to end on a tiny shapes dataset: train, resume, eval, multirun, fine-tune."""

from __future__ import annotations

import csv
import json
import os
import re
import time
from pathlib import Path

import pytest
import torch
from cli import INFER_TINY, TINY, run_cli, run_dirs

from detr_lightning.data.shapes import generate_shapes_dataset
from detr_lightning.evaluation.coco import METRIC_NAMES


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory) -> Path:
    return generate_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", train=12, val=5)


@pytest.fixture(scope="module")
def first_run(shapes_root, tmp_path_factory) -> tuple[Path, str, Path]:
    """One smoke training (3 steps): (cwd, output, run dir)."""
    cwd = tmp_path_factory.mktemp("first")
    out = run_cli("train", ["schedule=smoke", f"paths.shapes_dir={shapes_root}", *TINY], cwd)
    dirs = run_dirs(out)
    assert len(set(dirs)) == 1, out[-3000:]
    return cwd, out, dirs[0]


def test_training_writes_metrics_checkpoints_and_config(first_run) -> None:
    cwd, out, run_dir = first_run
    assert run_dir.parent == cwd / "outputs" / "shapes"  # derived from the experiment name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(METRIC_NAMES.values()) <= set(metrics)
    assert all(-1 <= metrics[k] <= 1 for k in METRIC_NAMES.values())
    assert metrics["run"]["global_step"] == 3 and metrics["run"]["experiment"] == "shapes"
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in out
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    (best,) = [c for c in ckpts if re.match(r"epoch000-AP\d\.\d{4}\.ckpt", c)]
    assert "last.ckpt" in ckpts
    assert metrics["run"]["checkpoint"] == str((run_dir / "checkpoints" / best).resolve())
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    logged = (run_dir / "csv" / "hparams.yaml").read_text()  # the resolved config, via the logger
    assert "d_model: 32" in logged and str(run_dir) in logged
    header = (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("train/loss", "train_epoch/loss_ce_0", "train_epoch/cardinality_error",
                "lr/main", "lr/backbone", "val/AP_S", "val/loss_giou"):  # fmt: skip
        assert key in header, key


def test_lightnings_own_messages_are_printed_once_and_logged(first_run) -> None:
    """Lightning's INFO lines (its device summary, "Restoring states from ...", Ctrl-C's
    "Detected KeyboardInterrupt", the seed) reach the console once and the run's train.log;
    its advert and callback-merging notes neither."""
    _, out, run_dir = first_run
    log = (run_dir / "train.log").read_text()
    for line in ("GPU available: ", "Restoring states from the checkpoint path at ",
                 "Seed set to 42"):  # fmt: skip
        assert out.count(line) == 1 and line in log, line
    for noise in ("Tip:", "model summary callbacks", "configure_callbacks` will override"):
        assert noise not in out and noise not in log, noise


def test_resume_continues_the_step_count_and_optimizer(first_run, shapes_root) -> None:
    cwd, _, run_dir = first_run
    last = run_dir / "checkpoints" / "last.ckpt"
    before = torch.load(last, weights_only=False)
    assert before["global_step"] == 3
    # what a kill during the next save would have left: removed by the resume once idle 10 min
    stale, live = (last.parent / f".last.ckpt.{tag}.tmp" for tag in ("abcd1234", "efgh5678"))
    stale.write_bytes(b"partial")
    live.write_bytes(b"partial")
    os.utime(stale, (time.time() - 601,) * 2)
    out = run_cli("train", ["schedule=smoke", "trainer.max_epochs=2", f"ckpt_path={last}",
                            f"paths.shapes_dir={shapes_root}", *TINY], cwd)  # fmt: skip
    assert not stale.exists() and live.exists() and f"removed {stale}" in out
    live.unlink()
    after = torch.load(run_dirs(out)[0] / "checkpoints" / "last.ckpt", weights_only=False)
    assert after["global_step"] == 6 and after["epoch"] == 1
    adam = after["optimizer_states"][0]["state"]
    assert {float(s["step"]) for s in adam.values()} == {6.0}  # 3 restored + 3 new steps
    assert after["lr_schedulers"][0]["last_epoch"] == 6
    assert json.loads((run_dirs(out)[0] / "metrics.json").read_text())["run"]["global_step"] == 6


def test_resume_recipe_config_trains_on_with_the_composed_lrs(first_run, shapes_root) -> None:
    """A resume with new lrs is refused by default (tests/checkpointing/test_recipe_record.py);
    with resume_recipe=config each group's lr follows its new setting (the shapes preset's 1e-3
    for the transformer and the backbone -> 5e-4 and 2e-4; multiplied groups follow the main
    lr), and the Adam moments and step count go on from the checkpoint."""
    cwd, _, run_dir = first_run
    last = run_dir / "checkpoints" / "last.ckpt"
    before = torch.load(last, weights_only=True)["optimizer_states"][0]["param_groups"]
    out = run_cli("train", ["schedule=smoke", "trainer.max_epochs=2", f"ckpt_path={last}",
                            "model.optimizer.lr=5e-4", "model.lr_backbone=2e-4",
                            "resume_recipe=config", "test=false",
                            f"paths.shapes_dir={shapes_root}", *TINY], cwd)  # fmt: skip
    assert "model.optimizer.lr: 0.001 in the run, 0.0005 here" in out
    assert "resume_recipe=config: the composed optimiser settings and lr schedule apply" in out
    after = torch.load(run_dirs(out)[0] / "checkpoints" / "last.ckpt", weights_only=True)
    groups = after["optimizer_states"][0]["param_groups"]
    assert [g["name"] for g in groups] == [g["name"] for g in before]
    for old, new in zip(before, groups, strict=True):
        ratio = 0.2 if old["name"] == "backbone" else 0.5
        assert new["lr"] == pytest.approx(old["lr"] * ratio), old["name"]
    assert {float(s["step"]) for s in after["optimizer_states"][0]["state"].values()} == {6.0}


def test_eval_from_checkpoint_reproduces_the_training_metrics(first_run, shapes_root) -> None:
    cwd, _, run_dir = first_run
    trained = json.loads((run_dir / "metrics.json").read_text())
    # typed as a user might, relative with "..": metrics.json must name the file all the same
    typed = f"../{cwd.name}/{os.path.relpath(trained['run']['checkpoint'], cwd)}"
    # schedule=smoke as in training: its limit_test_batches picks the same test images
    out = run_cli("eval", ["experiment=shapes", "schedule=smoke", f"ckpt_path={typed}",
                           f"paths.shapes_dir={shapes_root}", *TINY], cwd)  # fmt: skip
    eval_dir = run_dirs(out)[0]
    assert eval_dir.parent == cwd / "outputs" / "shapes" and eval_dir.name.startswith("eval_")
    evaluated = json.loads((eval_dir / "metrics.json").read_text())
    assert evaluated["run"]["checkpoint"] == trained["run"]["checkpoint"]
    assert {k: evaluated[k] for k in METRIC_NAMES.values()} == {
        k: trained[k] for k in METRIC_NAMES.values()
    }
    # APs of a 3-step model may all be 0 (nothing matched): equal zeros would prove nothing, so
    # the test losses, never 0, must agree too (same weights, same images)
    losses = [_logged(d / "csv" / "metrics.csv", "test/loss") for d in (run_dir, eval_dir)]
    assert losses[0] > 0 and losses[0] == pytest.approx(losses[1], rel=1e-6)
    # each category of the json, in label order, named and with its id, in both runs alike
    per_category = [json.loads((d / "metrics_per_category.json").read_text())["bbox"]
                    for d in (run_dir, eval_dir)]  # fmt: skip
    categories = json.loads((shapes_root / "annotations" / "instances_val.json").read_text())
    assert [(r["category_id"], r["name"]) for r in per_category[1]] == [
        (c["id"], c["name"]) for c in sorted(categories["categories"], key=lambda c: c["id"])
    ]
    assert per_category[0] == per_category[1]
    assert "bbox AP per category" in out


def _logged(csv_path: Path, key: str) -> float:
    """The last value of ``key`` in a Lightning CSV log."""
    with csv_path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get(key)]
    return float(rows[-1][key])


def test_eval_without_a_checkpoint_says_what_to_pass(tmp_path, shapes_root) -> None:
    out = run_cli("eval", [f"paths.shapes_dir={shapes_root}"], tmp_path, timeout=300, fails=True)
    assert "ckpt_path=" in out


def test_multirun_runs_two_jobs_with_their_own_dirs(tmp_path, shapes_root) -> None:
    tiny = [a for a in TINY if "num_encoder_layers" not in a]
    out = run_cli("train", ["-m", "schedule=smoke", "model.net.transformer.num_encoder_layers=0,1",
                            f"paths.shapes_dir={shapes_root}", *tiny], tmp_path)  # fmt: skip
    dirs = sorted(set(run_dirs(out)))
    assert len(dirs) == 2
    for d, layers in zip(dirs, ("0", "1"), strict=True):
        assert d.parent.parent == tmp_path / "multirun" / "shapes" and d.name == layers
        overrides = (d / ".hydra" / "overrides.yaml").read_text()
        assert f"model.net.transformer.num_encoder_layers={layers}" in overrides
        assert "AP" in json.loads((d / "metrics.json").read_text())


def test_a_sweep_job_with_a_config_error_fails_alone(tmp_path, shapes_root) -> None:
    """Job 0's error is its message alone; job 1 still trains; the sweep exits 1 naming job 0."""
    out = run_cli("train", ["-m", "schedule=smoke", f"paths.shapes_dir={shapes_root}", *TINY,
                            "data.val_batch_size=0,2"], tmp_path, fails=True)  # fmt: skip
    assert out.count("ConfigError: invalid config (1 problem):") == 2  # logged, then at the end
    assert "Error executing job with overrides: [" in out and "data.val_batch_size=0" in out
    (job,) = set(run_dirs(out))  # only job 1 reached training
    assert job.name == "1" and "AP" in json.loads((job / "metrics.json").read_text())


def test_predict_writes_coco_results_with_dataset_ids(first_run, shapes_root) -> None:
    cwd, _, run_dir = first_run
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    out = run_cli("predict", ["experiment=shapes", f"ckpt_path={ckpt}",
                              f"paths.shapes_dir={shapes_root}", *INFER_TINY], cwd)  # fmt: skip
    records = json.loads((run_dirs(out)[0] / "predictions.json").read_text())
    val = json.loads((shapes_root / "annotations" / "instances_val.json").read_text())
    assert len(records) == 8 * len(val["images"])  # every query of every image
    assert {r["image_id"] for r in records} == {i["id"] for i in val["images"]}
    assert {r["category_id"] for r in records} <= {c["id"] for c in val["categories"]}
    assert all(len(r["bbox"]) == 4 and r["bbox"][2] >= 0 and 0 <= r["score"] <= 1 for r in records)
