"""predict, visualize and export refuse command-line overrides of keys only training reads
(``trainer.*``, ``callbacks.*``, ``model.compile``, ...), naming the key that does the job there,
instead of composing them and silently ignoring them."""

from __future__ import annotations

import pytest
from cli import INFER_TINY, run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from detr_lightning.utils import conf_dir
from detr_lightning.utils.unread_overrides import INSTEAD, unread_overrides

READ = [  # what the entry points do read: the architecture, data, paths, their own keys
    "experiment=shapes_panoptic", "backbone=r18", "head=panoptic", "data=shapes",
    "model.net.num_queries=5", "+model.net.extra=1", "~model.pretrained",
    "proposal_head@model.net.queries.head=conv", "model.panoptic.postprocess.threshold=0.4",
    "data.val_transforms.size=96", "paths.shapes_dir=/x", "ckpt_path=last", "input=a.png",
    "speed.dtype=bfloat16", "speed.compile=true", "device=cpu", "model.compile_dir=x",
    "trainers=1", "test_images=x", "data.val_batch_size=2", "data.train_ann=x.json",
]  # fmt: skip


def test_keys_the_entry_points_read_are_accepted() -> None:
    for entry in ("predict", "visualize", "export"):
        assert unread_overrides(READ + INFER_TINY, entry) == []


def test_each_training_only_override_is_listed_with_its_replacement() -> None:
    lines = ["trainer.precision=bf16-mixed", "+model.compile={mode:max-autotune}",
             "trainer.devices=2", "~callbacks.progress_bar", "trainer=gpu", "schedule=smoke",
             "logger=wandb", "model.lr_schedule.drop_epochs=null", "stages=null", "test=false",
             "trainer.log_every_n_steps=1", "model.optimizer.lr=2e-4", "model.lr_backbone=0",
             "+model.lr_multipliers.sampling_offsets=0.1", "model.lr_scaling=linear",
             "model.criterion.weight_dict.loss_giou=4", "model.criterion.matcher.cost_bbox=2",
             "data.train_transforms.scales=[96]", "data.group_by_aspect_ratio=true"]  # fmt: skip
    got = unread_overrides(lines, "predict")
    assert [m.split(": ")[0] for m in got] == lines  # each one, in command-line order
    hints = {m.split(": ")[0]: m.rsplit("; ", 1)[1] for m in got}
    assert hints["trainer.precision=bf16-mixed"].startswith("use speed.dtype")
    assert hints["+model.compile={mode:max-autotune}"] == "use speed.compile=true"
    assert hints["trainer.devices=2"].startswith("use device")
    assert hints["trainer=gpu"].startswith("use device and speed.*")
    for line in ("~callbacks.progress_bar", "schedule=smoke", "test=false",
                 "trainer.log_every_n_steps=1", *lines[-8:]):  # fmt: skip
        assert hints[line] == "drop it"
    # visualize has a device but no precision or compile key; export neither
    vis = {m.split(": ")[0]: m.rsplit("; ", 1)[1] for m in unread_overrides(lines, "visualize")}
    assert vis["trainer.devices=2"].startswith("use device")
    assert vis["trainer.precision=bf16-mixed"] == "drop it"
    assert all(m.endswith("drop it") for m in unread_overrides(lines, "export"))


@pytest.mark.parametrize("entry", ["predict", "visualize"])
def test_the_suggested_keys_exist_in_the_entry_point_config(entry: str) -> None:
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        cfg = compose(entry, overrides=["input=x.png"])
    for hint in INSTEAD[entry].values():
        key = hint.removeprefix("use ").split(" ")[0].split("=")[0]
        if not key.endswith("*"):
            assert OmegaConf.select(cfg, key, default="absent") != "absent", key


@pytest.mark.parametrize(
    ("entry", "args", "expected"),
    [
        ("predict", ["input=x.png", "trainer.precision=bf16-mixed", "model.compile=true"],
         ["trainer.precision=bf16-mixed: predict does not read trainer.precision",
          "use speed.dtype", "model.compile=true: predict does not read model.compile",
          "use speed.compile=true"]),
        ("visualize", ["input=x.png", "trainer.accelerator=gpu"],
         ["trainer.accelerator=gpu: visualize does not read trainer.accelerator", "use device"]),
        ("export", ["callbacks.progress_bar=null"],
         ["callbacks.progress_bar=null: export does not read callbacks.progress_bar", "drop it"]),
    ],
)  # fmt: skip
def test_cli_refuses_before_loading_anything(tmp_path, entry, args, expected) -> None:
    (tmp_path / "w.ckpt").write_bytes(b"not even a checkpoint")
    where = f"output={tmp_path}/out/m.onnx" if entry == "export" else f"output_dir={tmp_path}/out"
    out = run_cli(entry, ["experiment=shapes", f"ckpt_path={tmp_path}/w.ckpt", *args, where],
                  tmp_path, timeout=120, fails=True)  # fmt: skip
    assert "configure training only and would be silently ignored" in out
    for text in expected:
        assert text in out, out[-3000:]
    assert "not a PyTorch checkpoint" not in out  # refused before the checkpoint is read
    # nothing written: predict's and visualize's output_dir is their run directory, which holds
    # only the refused run's log and config
    written = sorted(p.name for p in (tmp_path / "out").glob("*"))
    assert written == ([] if entry == "export" else [".hydra", f"{entry}.log"])
