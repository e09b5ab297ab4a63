"""Top-level keys nothing reads are refused: a typo'd ``+key=``, a preset's unknown key, and a
group option file without its ``# @package`` line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra_jobs import compose_job

from detr_lightning.utils import conf_dir
from detr_lightning.utils.config_check import ConfigError, check_config
from detr_lightning.utils.top_level_keys import known_top_level_keys, unknown_top_level_keys

ENTRIES = (
    "train",
    "predict",
)  # eval, visualize and export differ from these by their own keys only
EXPERIMENTS = sorted(p.stem for p in Path(conf_dir(), "experiment").glob("*.yaml"))


@pytest.mark.parametrize("entry", ENTRIES)
def test_every_shipped_composition_uses_known_keys_only(entry: str) -> None:
    runs = [[f"experiment={name}"] for name in EXPERIMENTS]
    if entry == "train":  # the groups that set top-level keys (_global_ option files)
        runs += [[f"experiment={name}", "head=panoptic"] for name in EXPERIMENTS]
        runs.append(["experiment=r50", "model=convergence", "queries=proposals", "refine=boxes",
                     "denoiser=dn", "loss_term=aspect", "cls_loss=focal", "schedule=smoke"])  # fmt: skip
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        for overrides in runs:
            cfg = compose(entry, overrides)
            assert unknown_top_level_keys(list(cfg), conf_dir(), entry) == [], overrides


def test_each_entry_point_knows_its_own_keys_only() -> None:
    train, predict = (known_top_level_keys(conf_dir(), e) for e in ("train", "predict"))
    assert {"model", "data", "trainer", "seed", "stages", "task", "required"} <= train
    assert {"backend", "onnx", "draw"} <= predict - train  # predict -> eval -> train
    assert "queries" not in train  # a group that composes under model.net, not at the top


def test_a_typo_on_the_command_line_is_refused_with_the_closest_key(tmp_path) -> None:
    cfg = compose_job(["experiment=shapes", "+seedd=1"], tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert "seedd: no such top-level key for train (did you mean seed?)" in str(err.value)
    cfg = compose_job(["experiment=shapes", "+atol=1"], tmp_path, name="predict")
    (message,) = unknown_top_level_keys(list(cfg), conf_dir(), "predict")
    assert message.startswith("atol: no such top-level key for predict;")  # export's, not predict's


def test_a_group_file_without_its_package_line_is_named_with_the_fix(tmp_path) -> None:
    conf = tmp_path / "conf"
    shutil.copytree(conf_dir(), conf, symlinks=False)
    learned = (conf / "queries" / "learned.yaml").read_text()
    assert learned.startswith("# @package model.net.queries\n")
    mine = learned.split("\n", 1)[1].replace("groups: 1", "groups: 3")
    (conf / "queries" / "mine.yaml").write_text(mine)
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("train", ["experiment=shapes_plain", "model=convergence", "queries=mine"])
    assert cfg.queries.groups == 3 and "queries" not in cfg.model.net  # where nothing reads it
    (message,) = unknown_top_level_keys(list(cfg), str(conf), "train", {"queries": "mine"})
    assert message.startswith("queries: conf/queries/mine.yaml composed at the top level")
    assert "Fix: make `# @package model.net.queries` its first line" in message
