"""wandb per Hydra job: one run per job, a sweep's jobs in one group, overrides as tags and
config, final test metrics in the summary. Checked on offline runs (their ``.wandb`` files)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import warm_cli
from cli import TINY, cli_env
from hydra.types import RunMode
from hydra_jobs import compose_job

from detr_lightning.utils.loggers import finish_wandb, override_tags, wandb_logger

SWEPT = "model.net.transformer.num_decoder_layers"


def wandb_records(path: Path) -> Iterator[Any]:
    """The protobuf records of a ``.wandb`` transaction log (LevelDB log format: a 7-byte file
    header, then 32 KiB blocks of records split into FULL/FIRST/MIDDLE/LAST chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:7]
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


def offline_run(run_dir: Path) -> dict[str, Any]:
    """id, group, name, tags, config, summary and exit code of an offline run directory."""
    (log,) = run_dir.glob("run-*.wandb")
    run: dict[str, Any] = {"config": {}, "summary": {}, "exit_code": None}
    for record in wandb_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.update(id=record.run.run_id, group=record.run.run_group, tags=list(record.run.tags),
                       name=record.run.display_name)  # fmt: skip
            items = record.run.config.update
        elif kind in ("config", "summary"):
            items = getattr(record, kind).update
        else:
            if kind == "exit":
                run["exit_code"] = record.exit.exit_code
            continue
        target = run["summary" if kind == "summary" else "config"]
        for item in items:
            key = item.key or "/".join(item.nested_key)
            target[key] = json.loads(item.value_json)
    return run


@pytest.fixture
def hydra_multirun(tmp_path) -> Iterator[list[str]]:
    """HydraConfig of job 1 of a sweep launched at multirun/shapes/2026-01-01_00-00-00."""
    overrides = ["experiment=shapes", f"{SWEPT}=2", f"paths.shapes_dir={tmp_path}", "seed=7"]
    sweep = {"mode": RunMode.MULTIRUN, "sweep.dir": "multirun/shapes/2026-01-01_00-00-00"}
    compose_job(overrides, hydra={**sweep, "job.num": 1})
    yield overrides
    finish_wandb()


def test_override_tags_skip_paths_and_fit_wandb_limit() -> None:
    long = "model.net.transformer.decoder.very_long_component_name.another_level=12345"
    tags = override_tags(["experiment=shapes", "paths.data_dir=/x", "+seed=1", long],
                         exclude_keys=["experiment"])  # fmt: skip
    short = "transformer.decoder.very_long_component_name.another_level=12345"  # 64 chars
    assert tags == ["+seed=1", short]
    assert len(override_tags(["k=" + "v" * 100])[0]) == 64


def test_sweep_job_logger_groups_tags_and_gets_its_own_run(
    hydra_multirun, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")  # Lightning sets it to dryrun: restore it after
    first = wandb_logger(mode="offline", project="t", save_dir=str(tmp_path / "a"), group="shapes",
                         name="shapes")  # fmt: skip
    assert first._wandb_init["group"] == "shapes-2026-01-01_00-00-00"
    assert first._wandb_init["name"] == f"shapes_{SWEPT}=2,seed=7"
    assert first._wandb_init["tags"] == [f"{SWEPT}=2", "seed=7"]  # experiment, paths: no tag
    assert first._wandb_init["config"] == {"overrides": hydra_multirun}
    left_open = first.experiment.id  # a job that failed before finishing its run
    second = wandb_logger(mode="offline", project="t", save_dir=str(tmp_path / "b"), tags=["x"])
    assert second._wandb_init["tags"] == ["x", f"{SWEPT}=2", "seed=7"]
    assert second.experiment.id != left_open  # not the left-over run (Lightning reuses it)
    finish_wandb({"AP": 0.25})
    import wandb

    assert wandb.run is None
    wandb.teardown()  # the service writes the .wandb files; stopping it flushes the last records
    (a,) = (tmp_path / "a" / "wandb").glob("offline-run-*")
    (b,) = (tmp_path / "b" / "wandb").glob("offline-run-*")
    assert offline_run(a)["exit_code"] == 1 and offline_run(b)["exit_code"] == 0
    assert offline_run(b)["summary"]["test/AP"] == 0.25


def test_a_sweep_jobs_logged_config_names_its_run_as_wandb_does(tmp_path, monkeypatch) -> None:
    """Job 1 of a sweep with logger=wandb: the run is named ``shapes_<its overrides>``, and the
    config it logs says that name as ``run_name`` and ``logger.wandb.name`` (it said
    ``shapes``, the composed value, which names no run of the sweep)."""
    from types import SimpleNamespace

    from hydra.utils import instantiate
    from omegaconf import open_dict

    from detr_lightning.utils.build import log_config

    monkeypatch.setenv("WANDB_MODE", "offline")  # Lightning sets it to dryrun: restore it after
    overrides = ["experiment=shapes", "logger=wandb", "logger.wandb.mode=offline", f"{SWEPT}=2",
                 "seed=7"]  # fmt: skip
    sweep = {"mode": RunMode.MULTIRUN, "sweep.dir": "multirun/shapes/2026-01-01_00-00-00"}
    cfg = compose_job(overrides, tmp_path, hydra={**sweep, "job.num": 1})
    with open_dict(cfg):
        del cfg.hydra  # what a job's function receives
    logger = instantiate(cfg.logger.wandb)
    log_config(SimpleNamespace(loggers=[logger]), cfg)
    finish_wandb()
    import wandb

    wandb.teardown()  # flushes the offline run's records
    (run_dir,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    run = offline_run(run_dir)
    assert run["name"] == f"shapes_{SWEPT}=2,seed=7"
    assert run["config"]["run_name"] == run["config"]["logger"]["wandb"]["name"] == run["name"]
    assert run["config"]["experiment_name"] == "shapes"


@pytest.fixture(scope="module")
def wandb_sweep(tmp_path_factory) -> tuple[Path, str]:
    """``train -m ... logger=[csv,wandb] num_decoder_layers=1,2`` offline: (sweep dir, output)."""
    from detr_lightning.data.shapes import generate_shapes_dataset

    shapes = generate_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", train=8, val=4)
    cwd = tmp_path_factory.mktemp("sweep")
    # Not silent (CI sets WANDB_SILENT=true): the test reads the "wandb sync" lines each job prints.
    env = cli_env(WANDB_SILENT="false")
    env.pop("WANDB_API_KEY", None)
    args = ["-m", "experiment=shapes", "schedule=smoke", "logger=[csv,wandb]", "tags=[demo]",
            f"paths.shapes_dir={shapes}", *TINY, f"{SWEPT}=1,2"]  # fmt: skip
    proc = warm_cli.run("detr_lightning.train", args, cwd, env, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    (sweep,) = (cwd / "multirun" / "shapes").iterdir()
    return sweep, out


def test_sweep_jobs_log_one_offline_run_each_in_one_group(wandb_sweep) -> None:
    sweep, out = wandb_sweep
    runs = []
    for job, layers in (("0", 1), ("1", 2)):
        (run_dir,) = (sweep / job / "wandb").glob("offline-run-*")
        assert f"wandb sync {run_dir}" in out
        run = offline_run(run_dir)
        assert f"{SWEPT}={layers}" in run["tags"] and "demo" in run["tags"]
        assert not [t for t in run["tags"] if t.startswith("tags=")]  # demo, not "tags=[demo]"
        assert "tags=" not in run["name"]
        assert run["name"].startswith("shapes_") and f"{SWEPT}={layers}" in run["name"]
        assert run["config"]["run_name"] == run["name"]  # the config names the run it is in
        assert f"{SWEPT}={layers}" in run["config"]["overrides"]
        assert run["config"]["model"]["net"]["transformer"]["num_decoder_layers"] == layers
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        for key in ("AP", "AP_S", "AP_M", "AP_L"):
            assert run["summary"][f"test/{key}"] == pytest.approx(metrics[key])
        assert run["exit_code"] == 0
        runs.append(run)
    assert runs[0]["id"] != runs[1]["id"]
    assert runs[0]["group"] == runs[1]["group"] == f"shapes-{sweep.name}"
    assert not re.search(r"wandb run already in progress", out)


def test_report_compares_the_sweep_jobs(wandb_sweep) -> None:
    from detr_lightning.report import write_report

    sweep, _ = wandb_sweep
    report = write_report([sweep]).read_text()
    for job, layers in (("0", 1), ("1", 2)):
        ap = json.loads((sweep / job / "metrics.json").read_text())["AP"]
        assert re.search(rf"^\| {job} \| `{SWEPT}={layers}` \| (\*\*)?{ap:.4f}", report, re.M)
    for png in ("ap_by_size.png", "val_ap.png"):
        assert (sweep / png).stat().st_size > 1000


def test_validation_and_attention_images_are_logged_at_their_validations_step(
    tmp_path, monkeypatch
) -> None:
    """wandb plots every key against trainer/global_step: a validation's images belong at the
    step of its val/AP (Lightning logs a validation at its last training batch's step, one less
    than trainer.global_step)."""
    import lightning as L
    import wandb
    from lightning.pytorch.loggers import WandbLogger
    from lit import fake_batch, tiny_lit
    from torch.utils.data import DataLoader

    from detr_lightning.attention_callback import AttentionMapLogger
    from detr_lightning.callbacks import ValidationImageLogger

    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="t")
    trainer = L.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", logger=logger, max_epochs=2,
        callbacks=[ValidationImageLogger(every_n_epochs=1, num_images=1, score_threshold=0.0),
                   AttentionMapLogger(every_n_epochs=1, num_images=1, score_threshold=0.0)],
        enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0,
        limit_train_batches=2, log_every_n_steps=1,
    )  # fmt: skip
    batches = DataLoader([fake_batch(i) for i in range(2)], batch_size=None)
    trainer.fit(tiny_lit(), train_dataloaders=batches, val_dataloaders=batches)
    wandb.finish()
    wandb.teardown()  # flushes the offline run's records
    (log,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    rows = []
    for record in wandb_records(log):
        if record.WhichOneof("record_type") == "history":
            rows.append(
                {i.key or "/".join(i.nested_key): i.value_json for i in record.history.item}
            )
    ap_steps = [int(r["trainer/global_step"]) for r in rows if "val/AP" in r]
    image_steps = [int(r["trainer/global_step"]) for r in rows if "val/images/count" in r]
    assert ap_steps == [1, 3]  # 2 steps per epoch: after steps 0-1 and 2-3
    assert image_steps == ap_steps
    # decoder and encoder pictures: a log call each
    attention = {int(r["trainer/global_step"]) for r in rows if any("attention" in k for k in r)}
    assert sorted(attention) == ap_steps


def test_overrides_that_name_or_label_the_run_are_no_tags() -> None:
    """run_name, tags and logger settings say what the run is called, not what was run: in a
    sweep they would otherwise turn up as tags ("tags=[demo]") and in every run's name."""
    overrides = ["run_name=abl", "tags=[demo]", "+tags=[x]", "logger.wandb.project=p",
                 "logger.wandb.tag_overrides=true", "seed=1", "model.lr_backbone=0"]  # fmt: skip
    assert override_tags(overrides) == ["seed=1", "model.lr_backbone=0"]


def test_wandb_unable_to_reach_its_server_is_explained_before_training(
    tmp_path, monkeypatch
) -> None:
    """Online with credentials but no route out: wandb's CommError (after its wait) becomes one
    line naming the offline fix; any other error of wandb.init passes unchanged."""
    import wandb
    from omegaconf import OmegaConf

    from detr_lightning.utils.build import log_config
    from detr_lightning.utils.loggers import WandbConnectionError

    monkeypatch.setenv("WANDB_MODE", "offline")  # Lightning's WandbLogger changes it: restored
    logger = wandb_logger(mode="online", save_dir=str(tmp_path), project="p")
    trainer = SimpleNamespace(loggers=[logger])

    def unreachable(**kwargs: Any) -> None:
        raise wandb.errors.CommError("Failed to get resume status: context deadline exceeded")

    monkeypatch.setattr(wandb, "init", unreachable)
    with pytest.raises(WandbConnectionError) as info:
        log_config(trainer, OmegaConf.create({"seed": 1}))
    assert "context deadline exceeded" in str(info.value)
    assert "logger.wandb.mode=offline (or WANDB_MODE=offline)" in str(info.value)

    def misused(**kwargs: Any) -> None:
        raise ValueError("not a connection problem")

    monkeypatch.setattr(wandb, "init", misused)
    with pytest.raises(ValueError, match="not a connection problem"):
        log_config(SimpleNamespace(loggers=[wandb_logger(mode="online", save_dir=str(tmp_path))]),
                   OmegaConf.create({"seed": 1}))  # fmt: skip
