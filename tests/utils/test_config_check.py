"""Bad config values fail before anything heavy, each naming its key and the fix; from the command
line before torch is imported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra_jobs import compose_job
from reliability_support import run

from detr_lightning.utils import conf_dir
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
        ("model.lr_schedule.warmup_steps=-5", "model.lr_schedule.warmup_steps=-5",
         "model.lr_schedule.warmup_steps=0"),
        ("model.lr_schedule.budget_min=0", "model.lr_schedule.budget_min=0", "positive number"),
        ("model.lr_schedule.decay_share=1.5", "model.lr_schedule.decay_share=1.5", "(0, 1]"),
        ("model.lr_schedule.decay_share=0", "model.lr_schedule.decay_share=0", "(0, 1]"),
        ("resume_recipe=new", "resume_recipe='new'", "resume_recipe=config"),
    ],
)  # fmt: skip
def test_bad_value_names_the_key_and_the_fix(tmp_path, override: str, key: str, fix: str) -> None:
    cfg = compose_job([override], tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    assert key in str(err.value) and fix in str(err.value) and "Fix:" in str(err.value)


def test_valid_configs_pass(tmp_path) -> None:
    for overrides in ([], ["trainer.devices=auto"], ["trainer.devices=[0,1]"],
                      ["trainer.max_epochs=-1", "model.lr_backbone=0"]):  # fmt: skip
        check_config(compose_job(overrides, tmp_path))


def test_every_problem_is_listed_at_once(tmp_path) -> None:
    cfg = compose_job(["data.batch_size=abc", "model.optimizer.lr=0", "ckpt_path=/nope.ckpt",
                       "trainer.devices=0"], tmp_path)  # fmt: skip
    with pytest.raises(ConfigError, match=r"4 problems") as err:
        check_config(cfg)
    for key in ("data.batch_size=", "model.optimizer.lr=0", "ckpt_path=/nope.ckpt: no such file",
                "trainer.devices=0"):  # fmt: skip
        assert key in str(err.value)


def test_resume_recipe_config_needs_a_resume(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"resume_recipe=config applies .* ckpt_path is not set"):
        check_config(compose_job(["resume_recipe=config"], tmp_path))
    check_config(compose_job(["resume_recipe=config", "ckpt_path=auto"], tmp_path))  # none yet
    (tmp_path / "resume.ckpt").write_bytes(b"x")
    check_config(compose_job(["resume_recipe=config", f"ckpt_path={tmp_path}/resume.ckpt"],
                             tmp_path))  # fmt: skip


def test_missing_pretrained_file_is_named_unless_resuming(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"model.pretrained=/nope.pth: no such file"):
        check_config(compose_job(["model.pretrained=/nope.pth"], tmp_path))
    (tmp_path / "resume.ckpt").write_bytes(b"x")  # resuming: the release file is not read
    check_config(compose_job(["model.pretrained=/nope.pth", f"ckpt_path={tmp_path}/resume.ckpt"],
                             tmp_path))  # fmt: skip


def test_missing_data_paths_are_named_per_stage(tmp_path) -> None:
    (tmp_path / "val").mkdir()
    (tmp_path / "val.json").write_text("{}")
    paths = [f"data.train_images={tmp_path}/nope", f"data.train_ann={tmp_path}/nope.json",
             f"data.val_images={tmp_path}/val", f"data.val_ann={tmp_path}/val.json"]  # fmt: skip
    cfg = compose_job(["data=custom", *paths], tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(cfg, "fit")
    msg = str(err.value)
    assert "2 problems" in msg and "data.train_images=" in msg and "no such image folder" in msg
    assert "data.train_ann=" in msg and "no such annotation file" in msg
    # Evaluation reads only the test split (= val here): the missing train data does not matter.
    cfg = compose_job(["data=custom", *paths, "ckpt_path=null", "model.pretrained=null"],
                      tmp_path, name="eval")  # fmt: skip
    with pytest.raises(ConfigError) as err:
        check_config(cfg, "test")
    assert "1 problem" in str(err.value) and "nothing to evaluate" in str(err.value)


def test_a_missing_evaluation_path_names_the_key_to_set(tmp_path) -> None:
    """Evaluation reads data.test_images, which conf/data sets to ${.val_images}: the error
    named data.test_images, a key the user never gives; now data.val_images, the path kept."""
    (tmp_path / "run.ckpt").write_bytes(b"")
    paths = [f"data.val_images={tmp_path}/nope", f"data.val_ann={tmp_path}/nope.json"]
    cfg = compose_job(["experiment=shapes", *paths, f"ckpt_path={tmp_path}/run.ckpt"], tmp_path,
                      name="eval")  # fmt: skip
    with pytest.raises(ConfigError) as err:
        check_config(cfg, "test")
    msg = str(err.value)
    assert "2 problems" in msg and "data.test_" not in msg.replace("(read as data.test_", "")
    for key, kind, test_key in (("data.val_images", "image folder", "data.test_images"),
                                ("data.val_ann", "annotation file", "data.test_ann")):  # fmt: skip
        value = f"{tmp_path}/nope" + (".json" if kind == "annotation file" else "")
        assert f"{key}={value} (read as {test_key}): no such {kind}" in msg
        assert f"Fix: give {key}=<path>" in msg
    # Training reads both splits: each missing path is named once, as the key it is set by
    with pytest.raises(ConfigError) as err:
        check_config(compose_job(["experiment=shapes", *paths], tmp_path), "fit")
    msg = str(err.value)
    assert "2 problems" in msg and "read as" not in msg and "data.test_" not in msg
    assert f"data.val_images={tmp_path}/nope: no such image folder" in msg


def test_a_path_starting_with_a_tilde_is_named_as_not_expanded(tmp_path) -> None:
    cfg = compose_job(["ckpt_path='~/runs/last.ckpt'", "data.val_images='~/shapes/val'"], tmp_path)
    with pytest.raises(ConfigError) as err:
        check_config(cfg, "fit")
    msg = str(err.value)
    assert "ckpt_path=~/runs/last.ckpt: no such file" in msg
    assert "data.val_images=~/shapes/val: no such image folder" in msg
    assert msg.count("`~` is not expanded here: give the full path") == msg.count("no such")


def test_unset_mandatory_path_is_named(tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        check_config(compose_job(["data=custom"], tmp_path))
    msg = str(err.value)
    assert "4 problems" in msg  # train/val images and annotations; test_* refer to val_*
    assert "data.train_images is not set (???). Fix: give data.train_images=<value>" in msg
    assert "data.val_ann is not set (???)" in msg


def test_cli_bad_batch_size_fails_before_importing_torch(tmp_path) -> None:
    # A fresh interpreter that lists its imports: the check runs before torch, torchvision and
    # Lightning are loaded (about 8 s), let alone data or a model.
    proc = run("train", ["data.batch_size=abc"], tmp_path, timeout=60,
               env={"PYTHONPROFILEIMPORTTIME": "1"}, fresh=True)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "data.batch_size='abc' (str): must be a positive integer" in out
    imported = set(re.findall(r"^import time:.*\| +([\w.]+)$", proc.stderr, flags=re.M))
    assert "detr_lightning.utils.config_check" in imported  # the listing works
    assert not imported & {"torch", "torchvision", "lightning"}
    assert not (tmp_path / "data").exists()  # nothing was generated or built


@pytest.mark.parametrize(
    ("config", "overrides", "key", "fix"),
    [
        ("train", ["model.net.num_queries=abc"], "model.net.num_queries='abc' (str)",
         "model.net.num_queries=100"),
        ("train", ["experiment=shapes", "model.net.num_queries=abc"],
         "model.net.num_queries='abc' (str)", "positive integer"),
        ("train", ["model.net.transformer.nhead=0"], "model.net.transformer.nhead=0",
         "model.net.transformer.nhead=8"),
        ("train", ["model.net.transformer.d_model=2.5"], "model.net.transformer.d_model=2.5",
         "model.net.transformer.d_model=256"),
        ("train", ["model.net.transformer.num_encoder_layers=-1"],
         "model.net.transformer.num_encoder_layers=-1", "integer >= 0"),
        ("train", ["model.net.transformer.num_decoder_layers=six"],
         "model.net.transformer.num_decoder_layers='six'", "positive integer"),
        ("train", ["experiment=shapes", "model.net.cross_attention.num_points=x"],
         "model.net.cross_attention.num_points='x'", "model.net.cross_attention.num_points=4"),
        ("train", ["data.keep_empty=maybe"], "data.keep_empty='maybe' (str)",
         "data.keep_empty=true"),
        ("train", ["data.exif_transpose=maybe"], "data.exif_transpose='maybe' (str)",
         "data.exif_transpose=true"),
        ("train", ["data.coco_id_space=1"], "data.coco_id_space=1", "null (decided"),
        ("predict", ["draw.score_threshold=abc"], "draw.score_threshold='abc' (str)",
         "a number in [0, 1]"),
        ("predict", ["draw.score_threshold=1.5"], "draw.score_threshold=1.5",
         "draw.score_threshold=0.5"),
        ("predict", ["draw.top_k=0"], "draw.top_k=0", "draw.top_k=20"),
        ("predict", ["batch_size=many"], "batch_size='many' (str)", "batch_size=4"),
        ("predict", ["device=gpu"], "device='gpu' (str)", "auto, cpu, cuda, cuda:N"),
        ("visualize", ["input=x.png", "score_threshold=high"], "score_threshold='high'",
         "score_threshold=0.5"),
        ("visualize", ["input=x.png", "device=cuda1"], "device='cuda1'", "device=cuda:0"),
        ("visualize", [], "input is not set (???)", "give input=<value>"),
        ("predict", ["input=''"], "input=''", "input=photos/"),
        ("export", ["example_size=[10]"], "example_size=[10]",
         "two positive integers [height, width]"),
        ("export", ["example_size=[0,320]"], "example_size=[0, 320]", "example_size=[256,320]"),
        ("export", ["verify_sizes=[[2,160]]"], "verify_sizes=[[2, 160]]", "three positive"),
    ],
)  # fmt: skip
def test_bad_model_data_and_entry_point_values_are_named(
    tmp_path, config: str, overrides: list[str], key: str, fix: str
) -> None:
    cfg = compose_job(overrides, tmp_path, name=config)
    with pytest.raises(ConfigError) as err:
        check_config(cfg)
    msg = str(err.value)
    assert "(1 problem)" in msg and key in msg and fix in msg and "Fix:" in msg


PRESETS = sorted(p.stem for p in (Path(conf_dir()) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize(
    ("config", "experiment"),
    [("train", e) for e in PRESETS]
    + [(c, "shapes") for c in ("eval", "predict", "visualize", "export")],
)
def test_the_presets_and_entry_points_pass_as_they_are(tmp_path, config: str,
                                                       experiment: str) -> None:  # fmt: skip
    (tmp_path / "w.ckpt").write_bytes(b"x")
    extra = ["input=x.png"] if config == "visualize" else []
    cfg = compose_job([f"experiment={experiment}", f"ckpt_path={tmp_path}/w.ckpt", *extra],
                      tmp_path, name=config)  # fmt: skip
    try:
        check_config(cfg, "predict" if config != "train" else "fit")
    except ConfigError as err:  # only the COCO files the paper presets expect are absent here
        assert not experiment.startswith("shapes"), str(err)  # shapes data is generated
        problems = str(err).split("\n  - ")[1:]
        assert problems, str(err)
        assert all(p.startswith("data.") and ": no such " in p for p in problems), str(err)


def test_valid_entry_point_values_pass(tmp_path) -> None:
    (tmp_path / "w.ckpt").write_bytes(b"x")
    ckpt = f"ckpt_path={tmp_path}/w.ckpt"
    for overrides in (["device=cpu", "draw.top_k=null", "draw.score_threshold=0", "batch_size=1"],
                      ["device=cuda:1", "draw.score_threshold=1", "data.keep_empty=false"]):  # fmt: skip
        check_config(compose_job([ckpt, *overrides], tmp_path, name="predict"), "predict")
    check_config(compose_job([ckpt, "example_size=[64,96]"], tmp_path, name="export"), "predict")


def test_cli_predict_bad_draw_threshold_fails_before_loading_anything(tmp_path) -> None:
    """It used to crash in the drawing code after the first batch, with no predictions.json."""
    (tmp_path / "w.ckpt").write_bytes(b"x")
    proc = run("predict", [f"ckpt_path={tmp_path}/w.ckpt", "input=x.png", "device=gpu",
                           "draw.score_threshold=abc", f"output_dir={tmp_path}/out"],
               tmp_path, timeout=60)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "invalid config (2 problems)" in out
    assert "draw.score_threshold='abc' (str): must be a number in [0, 1]" in out
    assert "device='gpu' (str): must be auto, cpu, cuda, cuda:N" in out
    # output_dir is the run directory: it holds the failed run's log and config, nothing else
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".hydra", "predict.log"]


def test_a_presets_required_key_must_be_given_to_a_fresh_training_run(tmp_path) -> None:
    cfg = compose_job(["experiment=shapes_finetune"], tmp_path)
    with pytest.raises(
        ConfigError,
        match=r"model\.pretrained is not set; experiment "
        r"shapes_finetune needs it: an official DETR release",
    ):
        check_config(cfg)
    for stage in ("test", "predict"):  # they read a checkpoint instead: not required there
        with pytest.raises(ConfigError) as err:
            check_config(compose_job(["experiment=shapes_finetune"], tmp_path), stage)
        assert "needs it" not in str(err.value) and "nothing to evaluate" in str(err.value)


def test_generated_data_paths_outside_its_root_must_exist(tmp_path) -> None:
    # Below data.generate_shapes.root the files are written on first use: not checked.
    check_config(compose_job([f"paths.shapes_dir={tmp_path / 'not_yet'}"], tmp_path))
    cfg = compose_job([f"paths.shapes_dir={tmp_path / 'not_yet'}", "data.val_ann=/nope.json"],
                      tmp_path)  # fmt: skip
    with pytest.raises(ConfigError, match=r"data\.val_ann=/nope\.json: no such annotation file"):
        check_config(cfg)
