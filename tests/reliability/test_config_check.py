"""Bad config values fail before anything heavy, each naming its key and the fix; from the command
line within seconds."""

from __future__ import annotations

import time

import pytest
from reliability_support import compose_cfg, run

from detr_lightning.utils.config_check import ConfigError, check_config


@pytest.mark.parametrize(
    ("override", "key", "fix"),
    [
        ("data.batch_size=abc", "data.batch_size='abc' (str)", "data.batch_size=2"),
        ("data.batch_size=0", "data.batch_size=0", "positive integer"),
        ("data.batch_size=2.5", "data.batch_size=2.5", "positive integer"),
        ("model.optimizer.lr=-1e-4", "model.optimizer.lr=-0.0001", "model.optimizer.lr=1e-4"),
        ("model.optimizer.lr=fast", "model.optimizer.lr='fast'", "positive number"),
        ("model.lr_backbone=-1", "model.lr_backbone=-1", "0 freezes the backbone"),
        ("trainer.max_epochs=ten", "trainer.max_epochs='ten'", "trainer.max_epochs=50"),
        ("trainer.max_epochs=-5", "trainer.max_epochs=-5", "integer >= 0"),
        ("trainer.devices=0", "trainer.devices=0", "trainer.devices=1"),
        ("trainer.devices=[a]", "trainer.devices=['a']", "list of device ids"),
        ("data.num_workers=-1", "data.num_workers=-1", "data.num_workers=4"),
    ],
)  # fmt: skip
def test_bad_value_names_the_key_and_the_fix(tmp_path, override: str, key: str, fix: str) -> None:
    cfg = compose_cfg([override], tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert key in str(err.value) and fix in str(err.value) and "Fix:" in str(err.value)


def test_valid_configs_pass(tmp_path) -> None:
    for overrides in ([], ["trainer.devices=auto"], ["trainer.devices=[0,1]"],
                      ["trainer.max_epochs=-1", "model.lr_backbone=0"]):  # fmt: skip
        check_config(compose_cfg(overrides, tmp_path))


def test_every_problem_is_listed_at_once(tmp_path) -> None:
    cfg = compose_cfg(["data.batch_size=abc", "model.optimizer.lr=0", "ckpt_path=/nope.ckpt",
                       "trainer.devices=0"], tmp_path)  # fmt: skip
    with pytest.raises(ConfigError, match=r"4 problems") as err:
        check_config(cfg)
    for key in ("data.batch_size=", "model.optimizer.lr=0", "ckpt_path=/nope.ckpt: no such file",
                "trainer.devices=0"):  # fmt: skip
        assert key in str(err.value)


def test_missing_pretrained_file_is_named_unless_resuming(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"model.pretrained=/nope.pth: no such file"):
        check_config(compose_cfg(["model.pretrained=/nope.pth"], tmp_path))
    (tmp_path / "resume.ckpt").write_bytes(b"x")  # resuming: the release file is not read
    check_config(compose_cfg(["model.pretrained=/nope.pth", f"ckpt_path={tmp_path}/resume.ckpt"],
                             tmp_path))  # fmt: skip


def test_missing_data_paths_are_named_per_stage(tmp_path) -> None:
    (tmp_path / "val").mkdir()
    (tmp_path / "val.json").write_text("{}")
    paths = [f"data.train_images={tmp_path}/nope", f"data.train_ann={tmp_path}/nope.json",
             f"data.val_images={tmp_path}/val", f"data.val_ann={tmp_path}/val.json"]  # fmt: skip
    cfg = compose_cfg(["data=custom", *paths], tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(cfg, "fit")
    msg = str(err.value)
    assert "2 problems" in msg and "data.train_images=" in msg and "no such image folder" in msg
    assert "data.train_ann=" in msg and "no such annotation file" in msg
    # Evaluation reads only the test split (= val here): the missing train data does not matter.
    cfg = compose_cfg(["data=custom", *paths, "ckpt_path=null", "model.pretrained=null"],
                      tmp_path, name="eval")  # fmt: skip
    with pytest.raises(ConfigError) as err:
        check_config(cfg, "test")
    assert "1 problem" in str(err.value) and "nothing to evaluate" in str(err.value)


def test_unset_mandatory_path_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        check_config(compose_cfg(["data=custom"], tmp_path))
    msg = str(err.value)
    assert "4 problems" in msg  # train/val images and annotations; test_* refer to val_*
    assert "data.train_images is not set (???). Fix: give data.train_images=<value>" in msg
    assert "data.val_ann is not set (???)" in msg


def test_cli_bad_batch_size_fails_within_seconds(tmp_path) -> None:
    start = time.monotonic()
    proc = run("train", ["data.batch_size=abc"], tmp_path, timeout=60)
    elapsed = time.monotonic() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "data.batch_size='abc' (str): must be a positive integer" in out
    assert elapsed < 10, f"took {elapsed:.1f} s"
    assert not (tmp_path / "data").exists()  # nothing was generated or built
