"""A resume whose ``trainer.max_epochs`` / ``max_steps`` ends before the checkpoint's epoch or
step is refused (Lightning would train nothing and exit 0); limits at its end pass."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from detr_lightning.checkpointing.before_resume import check_training_left
from detr_lightning.checkpointing.read import CheckpointLoadError

# written in epoch 1 (0-based) at step 6: 3 steps an epoch, the second epoch's end or mid-way
CHECKPOINT = {"epoch": 1, "global_step": 6}


def _trainer(max_epochs: int | None, max_steps: int = -1):
    return OmegaConf.create({"trainer": {"max_epochs": max_epochs, "max_steps": max_steps}})


@pytest.mark.parametrize(
    ("max_epochs", "max_steps", "fix"),
    [
        (1, -1, "trainer.max_epochs=2 or more"),
        (0, -1, "trainer.max_epochs=2 or more"),
        (2, 5, "trainer.max_steps=6 or more"),
        (None, 1, "trainer.max_steps=6 or more"),
    ],
)
def test_limits_before_the_checkpoint_are_refused_with_the_fix(max_epochs, max_steps, fix):
    with pytest.raises(CheckpointLoadError) as refused:
        check_training_left(CHECKPOINT, _trainer(max_epochs, max_steps), "r/last.ckpt")
    message = str(refused.value)
    assert message.startswith(
        "ckpt_path=r/last.ckpt was written in epoch 1 (counted from 0) at global step 6; "
    )
    assert f"Fix: {fix}" in message
    assert "make eval EXP=<the run's experiment> CKPT=r/last.ckpt." in message


@pytest.mark.parametrize(("max_epochs", "max_steps"), [(2, -1), (2, 6), (-1, -1), (None, -1),
                                                       (50, 100)])  # fmt: skip
def test_limits_at_or_after_the_checkpoints_end_pass(max_epochs, max_steps) -> None:
    check_training_left(CHECKPOINT, _trainer(max_epochs, max_steps), "r/last.ckpt")
