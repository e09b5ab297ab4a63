"""The stop's line and exit status name the signal the ranks agreed on: SIGTERM 143, a first
Ctrl-C 130; an evaluation so stopped says it wrote no metrics."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from detr_lightning.checkpointing.interrupted import (
    exit_stopped_evaluation,
    exit_stopped_training,
    stop_signal,
)
from detr_lightning.checkpointing.sigterm_agreement import SigtermAgreement


def _trainer(stopped_by: str | None) -> SimpleNamespace:
    agreement = SigtermAgreement()
    agreement.stopped_by = stopped_by
    checkpoint = SimpleNamespace(last_written_step=7, last_model_path="r/last.ckpt")
    return SimpleNamespace(callbacks=[object(), agreement], is_global_zero=True, global_step=7,
                           current_epoch=2, checkpoint_callback=checkpoint)  # fmt: skip


@pytest.mark.parametrize(("stopped_by", "name", "status"),
                         [("Ctrl-C", "Ctrl-C", 130), ("SIGTERM", "SIGTERM", 143),
                          (None, "SIGTERM", 143)])  # fmt: skip
def test_the_line_and_status_name_the_signal(stopped_by, name, status, caplog) -> None:
    trainer = _trainer(stopped_by)
    assert stop_signal(trainer) == (name, status)
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
        exit_stopped_training(trainer, "training")
    assert stop.value.code == status
    assert caplog.messages[-1].startswith(
        f"{name}: training stopped during training at global step 7 (epoch 2); last.ckpt "
        "(global step 7) is r/last.ckpt. To resume, "
    )
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
        exit_stopped_evaluation(trainer)
    assert stop.value.code == status
    assert caplog.messages[-1].startswith(f"{name}: evaluation stopped before its end; no "
                                          "metrics.json was written.")  # fmt: skip
