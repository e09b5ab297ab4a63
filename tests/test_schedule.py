"""LR schedules: hand-computed factors at given steps."""

import math
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from detr_lightning.schedule import (
    BudgetCosine,
    cosine_schedule,
    step_schedule,
    steps_per_epoch,
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


class _TinyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.planned = None

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        self.planned = steps_per_epoch(self.trainer)  # where the schedules ask for it
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_steps_per_epoch_equals_the_optimizer_steps_lightning_takes():
    # Lightning steps the optimizer after every 3 batches and on the epoch's last one: 10
    # batches under accumulate_grad_batches=3 take ceil(10 / 3) = 4 steps
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(10, 1)))
    module = _TinyModule()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=1, accumulate_grad_batches=3, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, data)
    assert trainer.global_step == 4 == module.planned
