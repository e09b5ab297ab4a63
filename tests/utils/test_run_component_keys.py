"""run_component_keys: the data module's, the trainer's, the callbacks' and the loggers' keys
are checked before anything is built; an entry that would build nothing is refused."""

from __future__ import annotations

import pytest
from hydra_jobs import compose_job
from omegaconf import OmegaConf

from detr_lightning.utils.config_check import ConfigError
from detr_lightning.utils.run_component_keys import named_component_errors, run_component_errors

CKPT = "detr_lightning.checkpointing.callback.BestAndLastCheckpoint"


def test_a_callback_entry_without_target_is_named_with_the_closest_entry() -> None:
    node = OmegaConf.create({
        "model_checkpoint": {"_target_": CKPT, "monitor": "val/AP"},
        "progress_bar": {"_target_": "lightning.pytorch.callbacks.RichProgressBar"},
        "val_images": None,  # switched off: allowed
        "checkpoint": {"every_n_epochs": 2},  # builds nothing: its key would be dropped
    })  # fmt: skip
    (message,) = named_component_errors(node, "callbacks")
    assert message.startswith("callbacks.checkpoint: a mapping without _target_")
    assert "entries are: model_checkpoint, progress_bar." in message
    assert "did you mean callbacks.model_checkpoint?" in message


def test_a_project_class_taking_kwargs_is_judged_by_the_bases_it_hands_them_to() -> None:
    # BestAndLastCheckpoint(**kwargs) hands them to ModelCheckpoint, whose arguments are fixed
    node = OmegaConf.create({"model_checkpoint": {"_target_": CKPT, "every_n_epoch": 2,
                                                  "every_n_train_steps": 5}})  # fmt: skip
    (message,) = named_component_errors(node, "callbacks")
    assert message.startswith(f"callbacks.model_checkpoint.every_n_epoch: {CKPT} takes no")
    assert "did you mean 'every_n_epochs'?" in message
    # a third-party **kwargs target (TensorBoardLogger hands them to its writer) is not judged
    tb = OmegaConf.create({"tb": {"_target_": "lightning.pytorch.loggers.TensorBoardLogger",
                                  "save_dir": ".", "anything": 1}})  # fmt: skip
    assert named_component_errors(tb, "logger") == []


@pytest.mark.parametrize(
    ("overrides", "start", "closest"),
    [
        (["experiment=shapes", "+trainer.max_epoch=3"], "trainer.max_epoch: ", "max_epochs"),
        (["experiment=shapes", "+data.batch_sizee=4"], "data.batch_sizee: ", "batch_size"),
        (["experiment=shapes_panoptic", "+data.keep_emtpy=true"], "data.keep_emtpy: ",
         "keep_empty"),  # PanopticDataModule(**kwargs) -> DetrDataModule
        (["experiment=shapes", "+logger.csv.flush_log_every=5"], "logger.csv.flush_log_every: ",
         "flush_logs_every_n_steps"),
    ],
)  # fmt: skip
def test_composed_runs_name_each_misspelt_component_key(tmp_path, overrides, start, closest):
    (message,) = run_component_errors(compose_job(overrides, tmp_path))
    assert message.startswith(start)
    assert f"did you mean '{closest}'?" in message


def test_every_preset_and_trainer_composes_without_a_component_key_error() -> None:
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from detr_lightning.utils import conf_dir

    presets = sorted(p.stem for p in (Path(conf_dir()) / "experiment").glob("*.yaml"))
    assert len(presets) >= 20
    runs = [[f"experiment={p}"] for p in presets] + [
        ["experiment=shapes", extra] for extra in ("logger=wandb", "logger=tensorboard",
                                                   "trainer=ddp_cpu", "trainer=ddp")
    ]  # fmt: skip
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        for overrides in runs:
            assert run_component_errors(compose("train", overrides=overrides)) == [], overrides


def test_build_run_refuses_a_dropped_callback_before_the_data_is_made(tmp_path) -> None:
    from detr_lightning.utils.build import build_run

    shapes = tmp_path / "shapes"
    cfg = compose_job(["experiment=shapes", f"paths.shapes_dir={shapes}",
                       "+callbacks.checkpoint.every_n_epochs=2"], tmp_path)  # fmt: skip
    with pytest.raises(ConfigError, match=r"callbacks.checkpoint: a mapping without _target_"):
        build_run(cfg)
    assert not shapes.exists()  # refused before the shapes data was generated
