"""LR schedules: hand-computed factors, and a wall budget that ends annealed inside its time."""

import functools
import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lit import loader, quiet_trainer, tiny_lit

from detr_lightning import budget
from detr_lightning.schedule import (
    BudgetCosine,
    budget_schedule,
    cosine_schedule,
    step_schedule,
)


def _trainer(batches: int, max_epochs: int = 1):
    fit_loop = SimpleNamespace(setup_data=lambda: None)
    return SimpleNamespace(
        fit_loop=fit_loop, num_training_batches=batches, accumulate_grad_batches=1,
        max_epochs=max_epochs,
    )  # fmt: skip


def _factors(scheduler, steps: int) -> list[float]:
    base = scheduler.optimizer.param_groups[0]["initial_lr"]
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"] / base)
        scheduler.optimizer.step()
        scheduler.step()
    return out


def _optimizer():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_step_schedule_warmup_and_drops():
    # 3 steps per epoch, drops at epochs 2 and 3 = steps 6 and 9, warm-up over 4 steps.
    scheduler = step_schedule(_optimizer(), _trainer(3), drop_epochs=[2, 3], warmup_steps=4)
    expected = [0.25, 0.5, 0.75, 1, 1, 1, 0.1, 0.1, 0.1, 0.01]
    assert _factors(scheduler, 10) == pytest.approx(expected)
    # An int is ONE drop (the paper's schedule), not a period.
    one = step_schedule(_optimizer(), _trainer(3), drop_epochs=2)
    assert _factors(one, 9) == pytest.approx([1] * 6 + [0.1] * 3)


def test_cosine_schedule_values():
    scheduler = cosine_schedule(_optimizer(), _trainer(10, max_epochs=10), warmup_steps=4)
    f = _factors(scheduler, 101)
    assert f[0] == pytest.approx(0.25)
    assert f[3] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 100)))
    assert f[50] == pytest.approx(0.5)
    assert f[100] == pytest.approx(0.0, abs=1e-9)


def test_budget_cosine_follows_its_replanned_length():
    factor = BudgetCosine(warmup_steps=4, total_steps=100)
    assert factor(0) == pytest.approx(0.25)
    assert factor(50) == pytest.approx(0.5)
    factor.replan(60)  # a slower machine: fewer steps fit
    assert factor(30) == pytest.approx(0.5)
    assert factor(60) == pytest.approx(0.0, abs=1e-12) and factor(80) == pytest.approx(0.0)


def test_budget_cosine_keeps_the_peak_until_its_decay_share():
    # 100 steps, no warm-up, the last 40 % a half cosine: 1 up to step 60, then
    # (1 + cos(pi * (step - 60) / 40)) / 2.
    factor = BudgetCosine(warmup_steps=0, total_steps=100, decay_share=0.4)
    assert factor(0) == factor(30) == factor(60) == pytest.approx(1.0)
    assert factor(70) == pytest.approx(0.5 * (1 + math.cos(math.pi * 10 / 40)))
    assert factor(80) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0, abs=1e-12)
    factor.replan(50)  # fewer steps fit: the decay starts at step 30
    assert factor(30) == pytest.approx(1.0) and factor(40) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="decay_share"):
        BudgetCosine(0, 10, decay_share=0.0)


class _FakeClock(L.Callback):
    """1 s per training batch, 0.5 s per validation batch, through WallBudget's clock."""

    def __init__(self, monkeypatch) -> None:
        self.now = 0.0
        monkeypatch.setattr(budget.time, "perf_counter", lambda: self.now)
        self.val_epochs: list[int] = []
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer, *args) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])  # the lr of this step

    def on_train_batch_end(self, trainer, *args) -> None:
        self.now += 1.0

    def on_validation_batch_end(self, trainer, *args) -> None:
        self.now += 0.5
        if not trainer.sanity_checking and trainer.current_epoch not in self.val_epochs:
            self.val_epochs.append(trainer.current_epoch)


def test_budget_run_ends_annealed_inside_its_budget(tmp_path, monkeypatch):
    """3 batches (3 s) per epoch and a 1 s validation (25 % > 10 %: every 3rd epoch) in a 20 s
    budget: after epoch 0 (4 s) 15 s are left for 4 epochs of 3 s + 1/3 of a validation, so the
    run ends after 5 epochs = 15 steps, validated at epochs 0, 2 and 4 (the last), lr annealed."""
    clock = _FakeClock(monkeypatch)
    lit = tiny_lit(lr_schedule=functools.partial(budget_schedule, budget_min=20 / 60))
    trainer = quiet_trainer(tmp_path, max_epochs=2, callbacks=[clock], limit_val_batches=2)
    trainer.fit(lit, train_dataloaders=loader(3), val_dataloaders=loader(2))
    assert (trainer.current_epoch, trainer.global_step) == (5, 15)
    assert clock.val_epochs == [0, 2, 4]
    assert clock.now <= 20
    base = 1e-3  # tiny_lit's lr
    assert clock.lrs[-1] / base == pytest.approx(0.5 * (1 + math.cos(math.pi * 14 / 15)))
    assert clock.lrs[-1] / base < 0.02
