"""A resume refuses overrides of what the checkpoint restores (optimiser, lr schedule), naming
each changed key, instead of composing them and training on with the checkpoint's values."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from lit import loader, quiet_trainer, tiny_lit

from detr_lightning.checkpointing.read import CheckpointLoadError
from detr_lightning.checkpointing.recipe_record import (
    RecipeRecord,
    check_resumed_recipe,
    recipe_record,
)
from detr_lightning.utils import conf_dir


def _cfg(*overrides: str):
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        return compose("train", overrides=["experiment=shapes", *overrides])


def test_the_record_holds_the_resolved_leaves_of_the_restored_keys() -> None:
    record = recipe_record(_cfg())
    assert record["model.optimizer.lr"] == 1e-3  # the shapes preset's
    assert record["model.lr_schedule.budget_min"] == 13.0
    assert record["model.lr_schedule._target_"] == "detr_lightning.schedule.budget_schedule"
    assert record["model.lr_multipliers.sampling_offsets"] == 0.1
    assert not any(k.startswith("model.net") for k in record)
    assert [k for k in record if k.startswith("data")] == ["data.batch_size", "data.train_images",
                                                            "data.train_ann"]  # fmt: skip
    assert [k for k in record if k.startswith("trainer")] == [
        "trainer.max_epochs", "trainer.accumulate_grad_batches", "trainer.gradient_clip_val"
    ]  # the cap, and two noted settings  # fmt: skip
    assert (record["seed"], record["data.batch_size"], record["trainer.gradient_clip_val"]) == (
        42,
        8,
        1.0,
    )


def test_a_resume_with_another_lr_or_schedule_is_refused_naming_each_key(tmp_path) -> None:
    trainer = quiet_trainer(tmp_path, max_steps=1, callbacks=[RecipeRecord(recipe_record(_cfg()))],
                            enable_checkpointing=True)  # fmt: skip
    trainer.fit(tiny_lit(), train_dataloaders=loader(1))
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # the record survives a safe load

    check_resumed_recipe(checkpoint, _cfg("trainer.limit_val_batches=2"), str(path))  # may change
    changed = _cfg("model.optimizer.lr=5e-5", "model.lr_schedule.budget_min=5")
    with pytest.raises(CheckpointLoadError) as err:
        check_resumed_recipe(checkpoint, changed, str(path))
    msg = str(err.value)
    assert f"ckpt_path={path}: resuming restores the optimiser" in msg
    assert "model.optimizer.lr: 0.001 in the run, 5e-05 here" in msg
    assert "model.lr_schedule.budget_min: 13.0 in the run, 5 here" in msg
    assert msg.count("\n  - ") == 2 and f"model.init_detector={path}" in msg
    del checkpoint["callbacks"]  # a checkpoint from before the record: nothing to compare
    check_resumed_recipe(checkpoint, changed, str(path))


def test_a_resume_with_another_seed_or_batch_size_is_logged_not_refused(tmp_path, caplog) -> None:
    """They may change, but the resumed run then no longer ends as the uninterrupted one."""
    trainer = quiet_trainer(tmp_path, max_steps=1, callbacks=[RecipeRecord(recipe_record(_cfg()))],
                            enable_checkpointing=True)  # fmt: skip
    trainer.fit(tiny_lit(), train_dataloaders=loader(1))
    trainer.save_checkpoint(tmp_path / "run.ckpt")
    checkpoint = torch.load(tmp_path / "run.ckpt", weights_only=True)
    with caplog.at_level("WARNING"):
        check_resumed_recipe(checkpoint, _cfg(), "run.ckpt")
        assert "differ from the run's" not in caplog.text
        check_resumed_recipe(checkpoint, _cfg("seed=7", "data.batch_size=4"), "run.ckpt")
    assert "ckpt_path=run.ckpt: these settings differ from the run's" in caplog.text
    assert "seed: 42 in the run, 7 here" in caplog.text
    assert "data.batch_size: 8 in the run, 4 here" in caplog.text
    recorded = checkpoint["callbacks"]["RecipeRecord"]["recipe"]
    for key in ("seed", "data.batch_size"):  # a checkpoint recorded before them: not compared
        del recorded[key]
    caplog.clear()
    check_resumed_recipe(checkpoint, _cfg("seed=7", "data.batch_size=4"), "run.ckpt")
    assert "differ from the run's" not in caplog.text


def test_the_cosine_records_max_epochs_its_length_and_config_applies_changes(caplog) -> None:
    """Under the cosine, trainer.max_epochs sets the restored schedule's length: a resume with
    another value is refused; with resume_recipe=config every change is logged instead."""
    cosine = ["schedule=cpu_short", "model.lr_schedule._target_=detr_lightning.schedule.cosine_schedule",
              "~model.lr_schedule.drop_epochs", "~model.lr_schedule.gamma"]  # fmt: skip
    run = recipe_record(_cfg(*cosine, "trainer.max_epochs=10"))
    assert run["trainer.max_epochs"] == 10
    ckpt = {"callbacks": {"RecipeRecord": {"recipe": run}}}
    with pytest.raises(CheckpointLoadError, match="trainer.max_epochs: 10 in the run, 20 here"):
        check_resumed_recipe(ckpt, _cfg(*cosine, "trainer.max_epochs=20"), "run.ckpt")
    applied = _cfg(*cosine, "trainer.max_epochs=20", "model.optimizer.lr=5e-4",
                   "resume_recipe=config")  # fmt: skip
    with caplog.at_level("WARNING"):
        check_resumed_recipe(ckpt, applied, "run.ckpt")
    assert "apply from the resumed step on" in caplog.text
    assert "trainer.max_epochs: 10 in the run, 20 here" in caplog.text
    assert "model.optimizer.lr: 0.001 in the run, 0.0005 here" in caplog.text


def test_a_restored_key_the_record_lacks_is_refused_too() -> None:
    from omegaconf import OmegaConf

    old = OmegaConf.create({"model": {"optimizer": {"lr": 1e-4},
                                      "lr_schedule": {"budget_min": 13}}})  # fmt: skip
    new = OmegaConf.create({"model": {"optimizer": {"lr": 1e-4},
                                      "lr_schedule": {"budget_min": 13, "decay_share": 0.3}}})  # fmt: skip
    ckpt = {"callbacks": {"RecipeRecord": {"recipe": recipe_record(old)}}}
    with pytest.raises(CheckpointLoadError, match="decay_share"):
        check_resumed_recipe(ckpt, new, "run.ckpt")


def test_the_budget_records_its_epoch_cap_and_older_records_still_resume(caplog) -> None:
    """Under the budget schedule trainer.max_epochs caps the restored plan: another value is
    refused, or applied with resume_recipe=config. A record written before the cap was recorded
    lacks the key: such checkpoints resume with any cap, as they did."""
    run = recipe_record(_cfg())  # the shapes preset: a budget without a cap
    assert run["trainer.max_epochs"] == -1
    ckpt = {"callbacks": {"RecipeRecord": {"recipe": run}}}
    with pytest.raises(CheckpointLoadError, match="trainer.max_epochs: -1 in the run, 3 here"):
        check_resumed_recipe(ckpt, _cfg("trainer.max_epochs=3"), "run.ckpt")
    with caplog.at_level("WARNING"):
        check_resumed_recipe(ckpt, _cfg("trainer.max_epochs=3", "resume_recipe=config"), "run.ckpt")
    assert "trainer.max_epochs: -1 in the run, 3 here" in caplog.text
    # null and -1 both leave the epochs to the budget: no change, either way round
    check_resumed_recipe(ckpt, _cfg("trainer.max_epochs=null"), "run.ckpt")
    uncapped = {"callbacks": {"RecipeRecord": {"recipe": {**run, "trainer.max_epochs": None}}}}
    check_resumed_recipe(uncapped, _cfg(), "run.ckpt")
    with pytest.raises(CheckpointLoadError, match="trainer.max_epochs: None in the run, 3 here"):
        check_resumed_recipe(uncapped, _cfg("trainer.max_epochs=3"), "run.ckpt")
    older = {k: v for k, v in run.items() if k != "trainer.max_epochs"}
    for cap in (-1, 3):
        check_resumed_recipe({"callbacks": {"RecipeRecord": {"recipe": older}}},
                             _cfg(f"trainer.max_epochs={cap}"), "old.ckpt")  # fmt: skip


def _resume_start(lr_schedule, saved_steps: int, steps_now: int) -> None:
    """RecipeRecord.on_train_start of a resume (resume_recipe=checkpoint) whose checkpoint had
    ``saved_steps`` optimizer steps an epoch, with ``steps_now`` here (a stand-in trainer)."""
    from types import SimpleNamespace

    record = RecipeRecord({})
    record.load_state_dict({"recipe": {}, "steps_per_epoch": saved_steps})
    trainer = SimpleNamespace(ckpt_path="run.ckpt", num_training_batches=steps_now,
                              accumulate_grad_batches=1,
                              fit_loop=SimpleNamespace(setup_data=lambda: None))  # fmt: skip
    record.on_train_start(trainer, SimpleNamespace(lr_schedule=lr_schedule))


def test_another_epoch_length_is_refused_under_the_cosine_only_where_steps_count() -> None:
    """The cosine's length is max_epochs x the run's steps per epoch: resumed with 5 steps an
    epoch instead of 10 it would end at another epoch, so it is refused; the budget schedule
    (planned from measured steps) and a step schedule without drops resume."""
    import functools

    from detr_lightning.schedule import budget_schedule, cosine_schedule, step_schedule

    with pytest.raises(CheckpointLoadError, match="an epoch has 5 optimizer steps here and had 10"):
        _resume_start(functools.partial(cosine_schedule), 10, 5)
    _resume_start(functools.partial(cosine_schedule), 10, 10)  # same length: fine
    _resume_start(functools.partial(budget_schedule, budget_min=1), 10, 5)
    _resume_start(functools.partial(step_schedule), 10, 5)
