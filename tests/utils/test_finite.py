"""Diverging training stops where the NaN/inf appears (the predictions, before the matcher), with
the step, epoch, lr and the real last good checkpoint named, also after a resume; the CLI exits
with a non-zero status."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
from lit import loader, quiet_trainer, tiny_lit
from reliability_support import run

from detr_lightning.checkpointing.callback import BestAndLastCheckpoint
from detr_lightning.lit_module import NonFiniteLossError
from detr_lightning.utils.finite import check_predictions


class _HugeLr(L.Callback):
    """Every learning rate x1e30 for each step (the scheduler rewrites lrs after a step)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        for group in trainer.optimizers[0].param_groups:
            group["lr"] = 1e30


def _watch_criterion(lit) -> list[bool]:
    """Records, per criterion call (the matcher runs inside it), whether every prediction it
    received was finite."""
    seen: list[bool] = []
    forward = lit.criterion.forward

    def spy(outputs, targets, *args, **kwargs):
        layers = [outputs, *outputs.get("aux_outputs", [])]
        seen.append(
            all(torch.isfinite(o[k]).all() for o in layers for k in ("pred_logits", "pred_boxes"))
        )
        return forward(outputs, targets, *args, **kwargs)

    lit.criterion.forward = spy
    return seen


def test_divergence_stops_at_the_predictions_naming_step_lr_and_checkpoint(tmp_path) -> None:
    lit = tiny_lit()
    criterion_saw = _watch_criterion(lit)
    cb = BestAndLastCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=1)
    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[_HugeLr(), cb],
                            enable_checkpointing=True, limit_val_batches=0)  # fmt: skip
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit(lit, train_dataloaders=loader(4))
    msg = str(err.value)
    step = int(re.search(r"Non-finite predictions at global step (\d+) \(epoch 0\)", msg)[1])
    assert "after lr main=1e+30, backbone=1e+30" in msg and "pred_" in msg
    assert f"last good checkpoint: {tmp_path / 'ckpt' / 'last.ckpt'} (global step {step})" in msg
    assert criterion_saw and all(criterion_saw)  # neither the loss nor the matcher saw a NaN
    assert torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == step


def test_after_a_resume_the_resumed_checkpoint_is_named(tmp_path) -> None:
    first = BestAndLastCheckpoint(dirpath=tmp_path / "run1")
    trainer = quiet_trainer(tmp_path, max_epochs=1, callbacks=[first], enable_checkpointing=True,
                            limit_val_batches=0)  # fmt: skip
    trainer.fit(tiny_lit(), train_dataloaders=loader(1))
    resumed_from = tmp_path / "run1" / "last.ckpt"

    lit = tiny_lit()
    net_forward = lit.net.forward

    def poisoned(*args, **kwargs):
        out = net_forward(*args, **kwargs)
        out["aux_outputs"][0]["pred_boxes"] = out["aux_outputs"][0]["pred_boxes"] * float("nan")
        return out

    lit.net.forward = poisoned
    # A new run directory whose callback has saved nothing yet when the NaN appears.
    trainer = quiet_trainer(tmp_path, max_epochs=2, enable_checkpointing=True,
                            callbacks=[BestAndLastCheckpoint(dirpath=tmp_path / "run2")],
                            limit_val_batches=0)  # fmt: skip
    with pytest.raises(NonFiniteLossError) as err:
        trainer.fit(lit, train_dataloaders=loader(1), ckpt_path=resumed_from)
    msg = str(err.value)
    assert "global step 1 (epoch 1)" in msg and "aux_outputs.0.pred_boxes" in msg
    assert f"last good checkpoint: {resumed_from}" in msg and "none saved yet" not in msg


def test_prediction_check_names_bad_predictions_and_ignores_other_tensors() -> None:
    lit = tiny_lit()
    # proposal_scores: not a prediction; such internal tensors may hold a deliberate -inf.
    good = {"pred_logits": torch.zeros(1, 2, 4), "pred_boxes": torch.rand(1, 2, 4),
            "aux_outputs": [{"pred_boxes": torch.rand(1, 2, 4)}], "indices": torch.arange(2),
            "proposal_scores": torch.full((1, 3), float("-inf"))}  # fmt: skip
    check_predictions(lit, good, 0)  # no trainer, nothing raised
    bad = {**good, "aux_outputs": [{"pred_boxes": torch.full((1, 2, 4), float("inf"))}]}
    with pytest.raises(NonFiniteLossError, match=r"train batch 0: aux_outputs.0.pred_boxes \("):
        check_predictions(lit, bad, 0)


def test_cli_divergence_exits_non_zero_with_the_named_message(tmp_path, shapes_root) -> None:
    from cli import TINY

    proc = run("train", ["schedule=smoke", f"paths.shapes_dir={shapes_root}", *TINY,
                         "model.optimizer.lr=1e30", "model.lr_backbone=1e30",
                         "callbacks.model_checkpoint.every_n_train_steps=1", "test=false"],
               tmp_path, timeout=300)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    named = re.search(r"Non-finite predictions at global step \d+ \(epoch 0\), after lr", out)
    assert named, out[-3000:]
    assert "last good checkpoint: " in out and "/checkpoints/last.ckpt (global step" in out
    assert "HungarianMatcher" not in out
