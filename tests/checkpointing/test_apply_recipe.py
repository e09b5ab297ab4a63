"""``resume_recipe=config``: a resume trains on with the composed optimiser settings and lr schedule
from the resumed step (lrs hand-computed, and equal to a fresh run of the new recipe); the
default refuses an epoch of another length under a schedule counted in steps."""

from __future__ import annotations

import functools
import math

import lightning as L
import pytest
import torch
from lit import loader, quiet_trainer, tiny_lit

from detr_lightning.checkpointing.read import CheckpointLoadError
from detr_lightning.checkpointing.recipe_record import RecipeRecord
from detr_lightning.schedule import cosine_schedule, step_schedule

BASE = 1e-3  # tiny_lit's lr


class _Lrs(L.Callback):
    """Each step's lrs and weight decays (as the optimizer step will use them), and the Adam
    step count of the first parameter when training starts."""

    def __init__(self) -> None:
        self.lrs: list[float] = []
        self.decays: list[float] = []
        self.adam_step_at_start: float | None = None

    def on_train_start(self, trainer, *args) -> None:
        state = trainer.optimizers[0].state
        first = next(iter(state.values()), None)
        self.adam_step_at_start = float(first["step"]) if first else 0.0

    def on_train_batch_start(self, trainer, *args) -> None:
        group = trainer.optimizers[0].param_groups[0]
        self.lrs.append(group["lr"])
        self.decays.append(group["weight_decay"])


def _fit(tmp_path, name, schedule, epochs, batches, mode="checkpoint", ckpt=None, **lit_kwargs):
    """Train tiny_lit ``epochs`` epochs of ``batches`` steps (resuming ``ckpt``); returns the lrs
    probe and the path of the checkpoint saved at the end."""
    probe = _Lrs()
    trainer = quiet_trainer(tmp_path / name, max_epochs=epochs,
                            callbacks=[probe, RecipeRecord({}, mode)])  # fmt: skip
    lit = tiny_lit(lr_schedule=schedule, **lit_kwargs)
    trainer.fit(lit, train_dataloaders=loader(batches), ckpt_path=ckpt)
    path = tmp_path / f"{name}.ckpt"
    trainer.save_checkpoint(path)
    return probe, str(path)


def test_a_moved_drop_and_a_new_weight_decay_apply_from_the_resumed_step(tmp_path) -> None:
    """The run: 2 steps per epoch, lr x0.1 at epoch 4 (step 8), stopped after 2 epochs (step 4).
    Resumed with the drop at epoch 1 (step 2, already passed) and weight decay 0.05: steps 4 and
    5 run at 1e-4 with decay 0.05, the lrs of a fresh run of that recipe; the Adam moments go on
    (step count 4). Resumed as it was (the default), they run at 1e-3 with decay 1e-4."""
    old = functools.partial(step_schedule, drop_epochs=[4])
    new = functools.partial(step_schedule, drop_epochs=[1])
    _, ckpt = _fit(tmp_path, "run", old, epochs=2, batches=2)
    wd = functools.partial(torch.optim.AdamW, lr=BASE, weight_decay=0.05)

    applied, _ = _fit(tmp_path, "applied", new, 3, 2, mode="config", ckpt=ckpt)
    assert applied.lrs == pytest.approx([BASE * 0.1] * 2)
    assert applied.adam_step_at_start == 4.0

    fresh, _ = _fit(tmp_path, "fresh", new, 3, 2)
    assert fresh.lrs[4:] == pytest.approx(applied.lrs)

    kept, _ = _fit(tmp_path, "kept", old, 3, 2, ckpt=ckpt)
    assert kept.lrs == pytest.approx([BASE] * 2)
    assert kept.decays == applied.decays == [1e-4] * 2  # tiny_lit's optimizer

    with_wd = _Lrs()
    trainer = quiet_trainer(tmp_path / "wd", max_epochs=3,
                            callbacks=[with_wd, RecipeRecord({}, "config")])  # fmt: skip
    lit = tiny_lit(lr_schedule=new)
    lit.optimizer_factory = wd
    trainer.fit(lit, train_dataloaders=loader(2), ckpt_path=ckpt)
    assert with_wd.decays == [0.05] * 2 and with_wd.lrs == pytest.approx([BASE * 0.1] * 2)


def test_an_extended_cosine_is_stretched_not_restarted(tmp_path) -> None:
    """A cosine over 2 epochs of 2 steps, resumed at step 4 with max_epochs=4: the config's
    cosine over 8 steps gives lr(s) = 1e-3 (1 + cos(pi s / 8)) / 2 at steps 4..7. The restored
    cosine (4 steps) would give 0 at step 4 and rise again."""
    _, ckpt = _fit(tmp_path, "run", cosine_schedule, epochs=2, batches=2)
    applied, _ = _fit(tmp_path, "applied", cosine_schedule, 4, 2, mode="config", ckpt=ckpt)
    want = [BASE * 0.5 * (1 + math.cos(math.pi * s / 8)) for s in range(4, 8)]
    assert applied.lrs == pytest.approx(want)
    kept, _ = _fit(tmp_path, "kept", cosine_schedule, 4, 2, ckpt=ckpt)
    assert kept.lrs[0] == pytest.approx(0, abs=1e-12) and kept.lrs[-1] > kept.lrs[1]


def test_another_epoch_length_is_refused_under_drop_epochs_and_rebuilt_with_config(
    tmp_path,
) -> None:
    """The run: 4 steps per epoch, drop at epoch 2 (step 8), saved after epoch 1 (step 4).
    Resumed with 2 steps per epoch (e.g. twice the GPUs): the restored drop would come at epoch
    4. The default refuses, naming both lengths; config rebuilds the drop at step 4 (epoch 2 of
    2 steps), so the resumed steps run at 1e-4."""
    schedule = functools.partial(step_schedule, drop_epochs=[2])
    _, ckpt = _fit(tmp_path, "run", schedule, epochs=1, batches=4)
    with pytest.raises(CheckpointLoadError) as err:
        _fit(tmp_path, "kept", schedule, 3, 2, ckpt=ckpt)
    msg = str(err.value)
    assert "an epoch has 2 optimizer steps here and had 4 in the run" in msg
    assert f"ckpt_path={ckpt}" in msg and "resume_recipe=config" in msg
    applied, _ = _fit(tmp_path, "applied", schedule, 3, 2, mode="config", ckpt=ckpt)
    assert applied.lrs == pytest.approx([BASE * 0.1] * 4)
    # no drops: nothing is counted in epochs, so another epoch length resumes as it was
    flat = functools.partial(step_schedule, drop_epochs=None, warmup_steps=2)
    _, flat_ckpt = _fit(tmp_path, "flat", flat, epochs=1, batches=4)
    kept, _ = _fit(tmp_path, "flat_kept", flat, 3, 2, ckpt=flat_ckpt)
    assert kept.lrs == pytest.approx([BASE] * 4)
