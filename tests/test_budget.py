"""WallBudget: a budgeted run plans its epochs from measured times and ends annealed inside its
budget (a fake clock makes the times exact, so the plans are hand-computed)."""

import functools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import lit
import pytest
import torch
from ddp_workers import start_method
from lit import quiet_trainer, tiny_lit

from detr_lightning import budget
from detr_lightning.schedule import budget_schedule

# The fake clock sets every time, so the images' size changes no plan: 32 px, not lit's 64.
loader = functools.partial(lit.loader, size=32)


class _FakeClock(L.Callback):
    """``batch_s(epoch)`` seconds per training batch (1 s by default), 0.5 s per validation
    batch, through WallBudget's clock; records the planned last epoch at each epoch start."""

    def __init__(self, monkeypatch, batch_s=lambda epoch: 1.0) -> None:
        self.now, self.batch_s = 0.0, batch_s
        self.plans: list[int] = []
        # only WallBudget's clock: Lightning's own timers keep the real one
        monkeypatch.setattr(budget, "time", SimpleNamespace(perf_counter=lambda: self.now))
        self.val_epochs: list[int] = []
        self.lrs: list[float] = []
        self.steps_per_epoch: list[int] = []

    def on_train_epoch_start(self, trainer, *args) -> None:
        if trainer.current_epoch > 0:
            self.plans.append(trainer.fit_loop.max_epochs)  # planned after the previous epoch

    def on_train_batch_start(self, trainer, *args) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])  # the lr of this step

    def on_train_batch_end(self, trainer, *args) -> None:
        self.now += self.batch_s(trainer.current_epoch)
        while len(self.steps_per_epoch) <= trainer.current_epoch:
            self.steps_per_epoch.append(0)
        self.steps_per_epoch[trainer.current_epoch] += 1

    def on_validation_batch_end(self, trainer, *args) -> None:
        self.now += 0.5
        if not trainer.sanity_checking and trainer.current_epoch not in self.val_epochs:
            self.val_epochs.append(trainer.current_epoch)


def test_budget_run_ends_annealed_inside_its_budget(tmp_path, monkeypatch):
    """3 batches (3 s) per epoch and a 1 s validation (25 % > 10 %: every 3rd epoch) in a 20 s
    budget. After epoch 0 (4 s) 20 - 4 - 1 (the last validation) = 15 s are left for epochs of
    3 s + 1/3 of a validation: 4.5 epochs = 13 whole steps, planned end step 3 + 13 = 16. The
    later re-plans agree (after epoch 4: 17 s spent, 2 s left = 0.6 epoch = 1 step), so epoch 5
    stops after its first step, validates, and the run ends at 19 s, lr annealed."""
    clock = _FakeClock(monkeypatch)
    lit = tiny_lit(lr_schedule=functools.partial(budget_schedule, budget_min=20 / 60))
    trainer = quiet_trainer(tmp_path, max_epochs=-1, callbacks=[clock], limit_val_batches=2)
    trainer.fit(lit, train_dataloaders=loader(3), val_dataloaders=loader(2))
    assert (trainer.current_epoch, trainer.global_step) == (6, 16)
    assert clock.steps_per_epoch == [3, 3, 3, 3, 3, 1]  # the last epoch stops part-way
    assert clock.val_epochs == [0, 2, 5]
    assert clock.now == pytest.approx(19)
    base = 1e-3  # tiny_lit's lr
    assert clock.lrs[-1] / base == pytest.approx(0.5 * (1 + math.cos(math.pi * 15 / 16)))
    assert clock.lrs[-1] / base < 0.01


def test_budget_plans_with_the_mean_epoch_time(tmp_path, monkeypatch):
    """A 30 s budget, 3 batches of 1 s per epoch except epoch 2 (1.5 s each: a hiccup), 1 s of
    validation after every epoch (max_val_share=1). Epoch 0 (start-up) is left out of the mean.
    After epoch k: left = 30 - spent - 1 (the last validation), epochs that fit = left / (mean
    train time + 1), steps = int(3 x that), planned last epoch = k + 1 + ceil(steps / 3):
    k=0: 25 / 4 = 6.25 -> 18 steps, plan 7;  k=1: 21 / 4 = 5.25 -> 15, 7;
    k=2: 15.5 / 4.75 = 3.26 -> 9, 6 (the hiccup epoch alone, 4.5 s, would give 2.82 -> 8, 6);
    k=3: 11.5 / 4.5 = 2.56 -> 7, 7;  k=4: 7.5 / 4.375 = 1.71 -> 5, 7;  k=5: 3.5 / 4.3 = 0.81
    -> 2 steps: epoch 6 stops after 2 steps (global step 20) and 1 s of validation, at 28.5 s."""
    clock = _FakeClock(monkeypatch, batch_s=lambda epoch: 1.5 if epoch == 2 else 1.0)
    schedule = functools.partial(budget_schedule, budget_min=0.5, max_val_share=1.0)
    lit = tiny_lit(lr_schedule=schedule)
    trainer = quiet_trainer(tmp_path, max_epochs=-1, callbacks=[clock], limit_val_batches=2)
    trainer.fit(lit, train_dataloaders=loader(3), val_dataloaders=loader(2))
    assert clock.plans == [7, 7, 6, 7, 7, 7]
    assert trainer.global_step == 20 and clock.now == pytest.approx(28.5)
    wall = next(c for c in trainer.callbacks if isinstance(c, budget.WallBudget))
    # the partial last epoch stays out of the mean
    assert (wall.train_s_sum, wall.train_s_count) == (pytest.approx(16.5), 5)


def test_a_positive_max_epochs_caps_the_plan(tmp_path, monkeypatch):
    """The first test's budget (20 s: 16 steps would fit) with trainer.max_epochs=3: the plan
    stops at 3 epochs x 3 steps = 9, the cosine is aimed at step 9 from the start, the last
    epoch validates, and the run ends at 3 x 3 s + 2 validations of 1 s = 11 s, annealed."""
    clock = _FakeClock(monkeypatch)
    lit = tiny_lit(lr_schedule=functools.partial(budget_schedule, budget_min=20 / 60))
    trainer = quiet_trainer(tmp_path, max_epochs=3, callbacks=[clock], limit_val_batches=2)
    trainer.fit(lit, train_dataloaders=loader(3), val_dataloaders=loader(2))
    assert (trainer.current_epoch, trainer.global_step) == (3, 9)
    assert clock.plans == [3, 3] and clock.val_epochs == [0, 2]
    assert clock.now == pytest.approx(11)
    base = 1e-3
    want = [0.5 * (1 + math.cos(math.pi * s / 9)) for s in range(9)]
    assert [lr / base for lr in clock.lrs] == pytest.approx(want)


def test_an_epoch_longer_than_the_budget_is_planned_inside_it(tmp_path, monkeypatch):
    """20 batches of 1 s in a 6 s budget: the plan cannot wait for the epoch's end (20 s).
    Checked every 3 steps: after 3 s, 3 s are left, 90 % of them (validation not measured yet
    gets max_val_share) = 2.7 steps -> 2 more, the last step is 5. The epoch stops there,
    validates (1 s) and the run ends at 6 s; the cosine is aimed at step 5 from step 4 on (the
    lr of step 3 was set before the plan)."""
    clock = _FakeClock(monkeypatch)
    lit = tiny_lit(lr_schedule=functools.partial(budget_schedule, budget_min=6 / 60))
    trainer = quiet_trainer(tmp_path, max_epochs=-1, callbacks=[clock], limit_val_batches=2)
    trainer.fit(lit, train_dataloaders=loader(20), val_dataloaders=loader(2))
    assert trainer.global_step == 5 and clock.steps_per_epoch == [5]
    assert clock.val_epochs == [0] and clock.now == pytest.approx(6)
    want = [1, 1, 1, 1, 0.5 * (1 + math.cos(math.pi * 4 / 5))]
    assert [lr / 1e-3 for lr in clock.lrs] == pytest.approx(want)


class _Crash(Exception):
    pass


class _CrashAtStep(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:  # before the checkpoint callback: last save is step-1
            raise _Crash


def test_validation_as_long_as_training_keeps_to_its_share(tmp_path, monkeypatch):
    """3 s of training and 3 s of validation (6 batches) per epoch in a 40 s budget, at most 10 %
    for validation: every n epochs costs 3/n s in 3 + 3/n, 10 % from n = 3 x 0.9 / (0.1 x 3) = 9
    on (val / (share x (train + val)) = 5 would spend 0.6 / 3.6 = 17 %). After epoch 0 (6 s):
    40 - 6 - 3 (the last validation) = 31 s for epochs of 3 + 1/3 s: 9.3 epochs = 27 steps, so
    the run validates after epoch 0, epoch 8 (every 9th) and epoch 9, its last."""
    clock = _FakeClock(monkeypatch)
    lit = tiny_lit(lr_schedule=functools.partial(budget_schedule, budget_min=40 / 60))
    trainer = quiet_trainer(tmp_path, max_epochs=-1, callbacks=[clock], limit_val_batches=6)
    trainer.fit(lit, train_dataloaders=loader(3), val_dataloaders=loader(6))
    assert trainer.global_step == 3 + 27 and clock.val_epochs == [0, 8, 9]


def _killed_at_step_5(tmp_path: Path, monkeypatch) -> Path:
    """The first test's run (20 s budget) with a save every step, killed at step 5: returns its
    last.ckpt (step 4, one batch into epoch 1, 4 s + 1 s spent)."""
    ckpt = L.pytorch.callbacks.ModelCheckpoint(tmp_path / "ckpt", every_n_train_steps=1,
                                               save_last=True)  # fmt: skip
    crashed = quiet_trainer(tmp_path / "b", max_epochs=-1, limit_val_batches=2,
                            callbacks=[_FakeClock(monkeypatch), _CrashAtStep(5), ckpt],
                            enable_checkpointing=True)  # fmt: skip
    with pytest.raises(_Crash):
        crashed.fit(tiny_lit(lr_schedule=functools.partial(budget_schedule, budget_min=20 / 60)),
                    train_dataloaders=loader(3), val_dataloaders=loader(2))  # fmt: skip
    return tmp_path / "ckpt" / "last.ckpt"


def test_a_mid_epoch_resume_continues_the_budget_and_the_cosine(tmp_path, monkeypatch):
    """The first test's run (20 s budget, 3 steps of 1 s per epoch, every 3rd epoch validates)
    killed at step 5; last.ckpt is step 4, one batch into epoch 1, at 4 s + 1 s spent. The
    resumed process has another clock (a real perf_counter is the machine's uptime): its
    plans must not read it. The rest of epoch 1 (2 steps, 2 s) is scaled to 3 s for the plan,
    so the resumed run follows the uninterrupted one: steps 4..15 at the same lrs, the same
    validations (epochs 2 and 5), the end at step 16 in epoch 6."""
    schedule = functools.partial(budget_schedule, budget_min=20 / 60)
    clock = _FakeClock(monkeypatch)
    trainer = quiet_trainer(tmp_path / "a", max_epochs=-1, callbacks=[clock], limit_val_batches=2)
    trainer.fit(tiny_lit(lr_schedule=schedule), train_dataloaders=loader(3),
                val_dataloaders=loader(2))  # fmt: skip
    reference = clock.lrs

    last = _killed_at_step_5(tmp_path, monkeypatch)

    resumed_clock = _FakeClock(monkeypatch)
    resumed_clock.now = 70_000.0
    resumed = quiet_trainer(tmp_path / "c", max_epochs=-1, callbacks=[resumed_clock],
                            limit_val_batches=2)  # fmt: skip
    resumed.fit(tiny_lit(lr_schedule=schedule), train_dataloaders=loader(3),
                val_dataloaders=loader(2), ckpt_path=str(last))  # fmt: skip
    assert (resumed.current_epoch, resumed.global_step) == (6, 16)
    assert resumed_clock.lrs == pytest.approx(reference[4:])
    assert resumed_clock.val_epochs == [2, 5]
    assert resumed_clock.now - 70_000.0 == pytest.approx(19 - 5)


def test_a_slow_last_epoch_still_ends_with_a_validation(tmp_path, monkeypatch):
    """The first test's run, but epoch 3 runs at 3 s a batch (9 s instead of 3): after it 4 + 3
    + 4 + 9 = 20 s are spent and nothing is left, yet epoch 3 did not validate (every 3rd epoch
    does). One more step makes epoch 4 the last, which validates the annealed weights."""
    clock = _FakeClock(monkeypatch, batch_s=lambda epoch: 3.0 if epoch == 3 else 1.0)
    lit = tiny_lit(lr_schedule=functools.partial(budget_schedule, budget_min=20 / 60))
    trainer = quiet_trainer(tmp_path, max_epochs=-1, callbacks=[clock], limit_val_batches=2)
    trainer.fit(lit, train_dataloaders=loader(3), val_dataloaders=loader(2))
    assert clock.steps_per_epoch == [3, 3, 3, 3, 1]
    assert clock.val_epochs == [0, 2, 4] and trainer.global_step == 13


class _RankClock(L.Callback):
    """Every rank's own WallBudget clock, set up in its process: rank r's training batches take
    1 + 0.25 r seconds and validation 0.5 s, so the ranks time different epochs. At the end each
    rank writes the lrs it stepped and the step it stopped at to ``rank<r>.json``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def setup(self, trainer, pl_module, stage) -> None:
        self.now, self.rank, self.lrs = 0.0, trainer.global_rank, []
        budget.time = SimpleNamespace(perf_counter=lambda: self.now)  # this process only

    def on_train_batch_start(self, trainer, *args) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_batch_end(self, trainer, *args) -> None:
        self.now += 1.0 + 0.25 * self.rank

    def on_validation_batch_end(self, trainer, *args) -> None:
        self.now += 0.5

    def on_fit_end(self, trainer, *args) -> None:
        record = {"lrs": self.lrs, "global_step": trainer.global_step}
        (Path(self.out_dir) / f"rank{self.rank}.json").write_text(json.dumps(record))


def test_ddp_ranks_follow_rank_zeros_plan(tmp_path):
    """Two gloo processes whose clocks disagree plan one schedule: the same lrs, the same last
    step, and the run ends (ranks that stopped at different steps would hang; the short
    process-group timeout turns that into an error). A progress bar is on: rank 0's bar reduces
    the epoch metrics before the plan is shared."""
    from datetime import timedelta

    from lightning.pytorch.strategies import DDPStrategy

    lit = tiny_lit(lr_schedule=functools.partial(budget_schedule, budget_min=20 / 60))
    strategy = DDPStrategy(start_method=start_method(), process_group_backend="gloo",
                           timeout=timedelta(seconds=60))  # fmt: skip
    trainer = L.Trainer(default_root_dir=tmp_path, accelerator="cpu", devices=2, strategy=strategy,
                        max_epochs=-1, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=1,
                        callbacks=[_RankClock(str(tmp_path))])  # fmt: skip
    trainer.fit(lit, train_dataloaders=loader(4), val_dataloaders=loader(2))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    assert ranks[0]["lrs"][-1] / 1e-3 < 0.05  # annealed on both


def _resume_with_30s_budget(ckpt: Path, monkeypatch) -> tuple[L.Trainer, _FakeClock]:
    """Resume ``ckpt`` with a 30 s budget and resume_recipe=config, on a fresh fake clock."""
    from detr_lightning.checkpointing.recipe_record import RecipeRecord

    clock = _FakeClock(monkeypatch)
    trainer = quiet_trainer(ckpt.parent / "resumed", max_epochs=-1, limit_val_batches=2,
                            callbacks=[clock, RecipeRecord({}, "config")])  # fmt: skip
    trainer.fit(tiny_lit(lr_schedule=functools.partial(budget_schedule, budget_min=0.5)),
                train_dataloaders=loader(3), val_dataloaders=loader(2), ckpt_path=str(ckpt))  # fmt: skip
    return trainer, clock


def test_resume_recipe_config_plans_a_bigger_budget_at_once(tmp_path, monkeypatch):
    """The first test's run (20 s budget) ends at step 16 after 19 s, its mean epoch 3 s and its
    validation 1 s (every 3rd epoch). Resumed from its end with a 30 s budget and
    resume_recipe=config, it plans at once: 30 - 19 - 1 (the last validation) = 10 s for epochs
    of 3 s + 1/3 of a validation: 3 epochs = 9 steps. The cosine over 16 + 9 = 25 steps gives
    steps 16..24 their lrs, and the run ends at step 25, validating at the end."""
    clock = _FakeClock(monkeypatch)
    trainer = quiet_trainer(tmp_path / "a", max_epochs=-1, callbacks=[clock], limit_val_batches=2)
    trainer.fit(tiny_lit(lr_schedule=functools.partial(budget_schedule, budget_min=20 / 60)),
                train_dataloaders=loader(3), val_dataloaders=loader(2))  # fmt: skip
    assert trainer.global_step == 16 and clock.now == pytest.approx(19)
    trainer.save_checkpoint(tmp_path / "end.ckpt")

    resumed, resumed_clock = _resume_with_30s_budget(tmp_path / "end.ckpt", monkeypatch)
    assert resumed.global_step == 25
    want = [0.5 * (1 + math.cos(math.pi * s / 25)) for s in range(16, 25)]
    assert [lr / 1e-3 for lr in resumed_clock.lrs] == pytest.approx(want)
    assert resumed_clock.val_epochs[-1] == resumed.current_epoch - 1  # the last epoch validated


def test_a_changed_budget_after_one_epoch_plans_from_its_time(tmp_path, monkeypatch):
    """A run capped at one epoch (3 steps, 3 s + 1 s of validation) resumed with a 30 s budget and
    resume_recipe=config: no mean yet, so the plan takes the 4 s spent per epoch done. Validation
    every ceil(1 x 0.9 / (0.1 x 4)) = 3 epochs; 30 - 4 - 1 = 25 s for epochs of 4 + 1/3 s: 5.77
    epochs = 17 steps, so the first resumed step (3) runs at the cosine over 20 steps. Without
    the plan the restored one (it ended at step 3) would stop the run at once."""
    clock = _FakeClock(monkeypatch)
    trainer = quiet_trainer(tmp_path / "a", max_epochs=1, callbacks=[clock], limit_val_batches=2)
    trainer.fit(tiny_lit(lr_schedule=functools.partial(budget_schedule, budget_min=20 / 60)),
                train_dataloaders=loader(3), val_dataloaders=loader(2))  # fmt: skip
    assert trainer.global_step == 3 and clock.now == pytest.approx(4)
    trainer.save_checkpoint(tmp_path / "one.ckpt")

    resumed, resumed_clock = _resume_with_30s_budget(tmp_path / "one.ckpt", monkeypatch)
    assert resumed_clock.lrs[0] / 1e-3 == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 20)))
    assert resumed.global_step > 3


class _FirstBatch(L.Callback):
    """Records ``(max_epochs, the cosine's planned last step)`` at the first training batch."""

    seen: tuple[int, int] | None = None

    def on_train_batch_start(self, trainer, *args) -> None:
        if self.seen is None:
            total = trainer.lr_scheduler_configs[0].scheduler.factor.total_steps
            self.seen = (trainer.fit_loop.max_epochs, total)


def test_a_changed_budget_resumed_mid_epoch_counts_the_epoch_it_ends_in(tmp_path, monkeypatch):
    """The mid-epoch save of ``_killed_at_step_5`` (step 4, one step into epoch 1, 5 s spent, no
    mean yet: 5 s / (4/3) epochs = 3.75 s per epoch) resumed with a 31 s budget and
    resume_recipe=config: validation every ceil(1 x 0.9 / (0.1 x 3.75)) = 3 epochs,
    31 - 5 - 1 = 25 s for epochs of 3.75 + 1/3 s: 6.12 epochs = 18 steps. The last step,
    4 + 18 = 22, lies in epoch 7 (steps 21-23), so the plan runs 8 epochs from the first resumed
    batch on (counting the resumed epoch as whole would give 1 + 18 / 3 = 7)."""
    from detr_lightning.checkpointing.recipe_record import RecipeRecord

    last = _killed_at_step_5(tmp_path, monkeypatch)
    first = _FirstBatch()
    resumed = quiet_trainer(tmp_path / "c", max_epochs=-1, limit_val_batches=2,
                            callbacks=[_FakeClock(monkeypatch), first, RecipeRecord({}, "config")])  # fmt: skip
    resumed.fit(tiny_lit(lr_schedule=functools.partial(budget_schedule, budget_min=31 / 60)),
                train_dataloaders=loader(3), val_dataloaders=loader(2),
                ckpt_path=str(last))  # fmt: skip
    assert first.seen == (8, 22)


def _resume_capped(ckpt: Path, cap: int, monkeypatch) -> tuple[L.Trainer, _FakeClock]:
    """Resume ``ckpt`` (20 s budget) with ``trainer.max_epochs=cap`` and resume_recipe=config."""
    from detr_lightning.checkpointing.recipe_record import RecipeRecord

    clock = _FakeClock(monkeypatch)
    trainer = quiet_trainer(ckpt.parent / f"cap{cap}", max_epochs=cap, limit_val_batches=2,
                            callbacks=[clock, RecipeRecord({}, "config")])  # fmt: skip
    trainer.fit(tiny_lit(lr_schedule=functools.partial(budget_schedule, budget_min=20 / 60)),
                train_dataloaders=loader(3), val_dataloaders=loader(2), ckpt_path=str(ckpt))  # fmt: skip
    return trainer, clock


def test_a_raised_epoch_cap_extends_a_finished_run_at_once(tmp_path, monkeypatch):
    """A run capped at one epoch (3 steps, 3 s + 1 s of validation, 20 s budget) resumed with
    trainer.max_epochs=3 and resume_recipe=config: planned again at once from its 4 s epoch,
    20 - 4 - 1 = 15 s would fit 10 steps, the cap leaves 9 - 3 = 6, so steps 3..8 run on the
    cosine over 9 steps. The restored plan (it ended at step 3) ran one step at lr 0 and
    stopped: the new cap was ignored."""
    trainer = quiet_trainer(tmp_path / "a", max_epochs=1, limit_val_batches=2,
                            callbacks=[_FakeClock(monkeypatch)])  # fmt: skip
    trainer.fit(tiny_lit(lr_schedule=functools.partial(budget_schedule, budget_min=20 / 60)),
                train_dataloaders=loader(3), val_dataloaders=loader(2))  # fmt: skip
    assert trainer.global_step == 3
    trainer.save_checkpoint(tmp_path / "one.ckpt")

    resumed, clock = _resume_capped(tmp_path / "one.ckpt", 3, monkeypatch)
    assert resumed.global_step == 9
    want = [0.5 * (1 + math.cos(math.pi * s / 9)) for s in range(3, 9)]
    assert [lr / 1e-3 for lr in clock.lrs] == pytest.approx(want)


def test_a_lowered_epoch_cap_anneals_at_the_new_end(tmp_path, monkeypatch):
    """The uncapped run killed at step 5 (last.ckpt: step 4, one step into epoch 1, planned to
    end at step 16) resumed with trainer.max_epochs=2 and resume_recipe=config: the cap leaves
    6 - 4 = 2 steps, and the cosine is aimed at step 6 from the first resumed step, so the run
    ends annealed, and validates (the plan ends in the resumed epoch, which gets no epoch
    start). Following the restored plan, steps 4 and 5 ran near the peak lr and the cap stopped
    the run there, not annealed."""
    last = _killed_at_step_5(tmp_path, monkeypatch)
    resumed, clock = _resume_capped(last, 2, monkeypatch)
    assert resumed.global_step == 6 and clock.val_epochs == [1]
    want = [0.5 * (1 + math.cos(math.pi * s / 6)) for s in (4, 5)]
    assert [lr / 1e-3 for lr in clock.lrs] == pytest.approx(want)


# WallBudget's hooks driven by hand: a stand-in trainer (what the hooks read of it) and the fake
# clock, for the cases a fit cannot reach in a few steps.


class _Hooks:
    """A WallBudget and a stand-in trainer: ``steps`` batches per epoch, a ``budget_s`` budget,
    the default 10 % validation share, no epoch cap; ``now`` is WallBudget's clock."""

    def __init__(self, monkeypatch, steps: int = 3, budget_s: float = 60.0) -> None:
        from detr_lightning.schedule import BudgetCosine, BudgetLR

        self.now = 0.0
        monkeypatch.setattr(budget, "time", SimpleNamespace(perf_counter=lambda: self.now))
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        self.scheduler = BudgetLR(optimizer, BudgetCosine(0, 10**9), budget_s)
        self.trainer = SimpleNamespace(
            lr_scheduler_configs=[SimpleNamespace(scheduler=self.scheduler)],
            fit_loop=SimpleNamespace(max_epochs=-1, setup_data=lambda: None),
            num_training_batches=steps, accumulate_grad_batches=1, world_size=1,
            global_step=0, current_epoch=0, check_val_every_n_epoch=1, should_stop=False,
            sanity_checking=False,
        )  # fmt: skip
        self.logged: dict[str, float] = {}
        self.module = SimpleNamespace(log=lambda k, v: self.logged.update({k: v}),
                                      log_dict=self.logged.update)  # fmt: skip
        self.wall = budget.WallBudget()

    def validate(self, seconds: float, sanity: bool = False) -> None:
        self.trainer.sanity_checking = sanity
        self.wall.on_validation_start(self.trainer, self.module)
        self.now += seconds
        self.wall.on_validation_end(self.trainer, self.module)
        self.trainer.sanity_checking = False

    def train(self, steps: int, seconds_per_step: float) -> None:
        for _ in range(steps):
            self.now += seconds_per_step
            self.trainer.global_step += 1
            self.wall.on_train_batch_end(self.trainer)

    def end_epoch(self) -> None:
        self.wall.on_train_epoch_end(self.trainer, self.module)
        self.trainer.current_epoch += 1


def test_the_sanity_check_validation_is_not_timed(monkeypatch):
    """A 5 s sanity check, then epoch 0: 3 steps of 1 s, no validation. The plan knows no
    validation time: every epoch may validate (n >= 0), 60 - 3 - 0 = 57 s fit 19 epochs = 57
    steps, the cosine's end at step 3 + 57 = 60. Counting the sanity check as the last
    validation (5 s) would plan 60 - 3 - 5 = 52 s with validation every 15th epoch."""
    hooks = _Hooks(monkeypatch)
    hooks.wall.on_fit_start(hooks.trainer, hooks.module)
    hooks.validate(5.0, sanity=True)
    hooks.wall.on_train_start(hooks.trainer, hooks.module)
    hooks.wall.on_train_epoch_start(hooks.trainer, hooks.module)
    hooks.train(3, 1.0)
    hooks.end_epoch()
    assert hooks.logged["budget/val_s"] == 0.0
    assert hooks.scheduler.factor.total_steps == 60
    assert hooks.trainer.check_val_every_n_epoch == 1 and hooks.trainer.fit_loop.max_epochs == 20


def test_a_resumed_part_epoch_plans_with_the_saved_mean(monkeypatch):
    """Resumed one step into epoch 2 (3 steps an epoch, 10 s spent, mean epoch 3 s over two
    epochs, validation every epoch, none timed yet): the rest of epoch 2 (2 steps) is slow, 5 s
    a step. The mean (3 s) plans, not that part scaled to an epoch (15 s): 60 - 20 = 40 s left
    fit 40 / 3 epochs = 40 steps, the cosine's end at step 9 + 40 = 49, the last epoch 3 +
    ceil(40 / 3) = 17."""
    hooks = _Hooks(monkeypatch)
    hooks.wall.load_state_dict({"spent_s": 10.0, "every": 1, "last_val_s": 0.0,
                                "train_s_sum": 6.0, "train_s_count": 2, "cap": None})  # fmt: skip
    hooks.trainer.global_step, hooks.trainer.current_epoch = 7, 2
    hooks.wall.on_fit_start(hooks.trainer, hooks.module)
    hooks.wall.on_train_start(hooks.trainer, hooks.module)
    hooks.train(2, 5.0)
    hooks.end_epoch()
    assert hooks.logged["budget/train_s"] == pytest.approx(3.0)
    assert hooks.scheduler.factor.total_steps == 49
    assert hooks.trainer.fit_loop.max_epochs == 17


def test_the_cap_counts_as_changed_when_the_checkpoint_does_not_say(monkeypatch):
    """A checkpoint written before the cap was saved cannot tell: replan (the safe side); one
    that saved this run's cap has not changed; another cap has."""
    hooks = _Hooks(monkeypatch)
    hooks.trainer.fit_loop.max_epochs = 5
    state = {"spent_s": 4.0, "every": 1, "last_val_s": 1.0}
    for saved, changed in (({}, True), ({"cap": 5}, False), ({"cap": 3}, True),
                           ({"cap": None}, True)):  # fmt: skip
        wall = budget.WallBudget()
        wall.load_state_dict({**state, **saved})
        wall.on_fit_start(hooks.trainer, hooks.module)
        assert wall.cap_changed is changed, saved


def test_after_the_first_plan_a_slow_epoch_is_replanned_at_its_end_only(monkeypatch):
    """20 steps an epoch in a 60 s budget. Epoch 0 (1 s a step, 20 s) plans 60 - 20 = 40 s =
    2 epochs: the cosine ends at step 60. Epoch 1 runs at 3 s a step: the plan made inside an
    epoch is for the first epoch only (its time per step is all there is then), so the cosine
    stays aimed at step 60 through epoch 1 until its end."""
    hooks = _Hooks(monkeypatch, steps=20)
    hooks.wall.on_fit_start(hooks.trainer, hooks.module)
    hooks.wall.on_train_start(hooks.trainer, hooks.module)
    hooks.wall.on_train_epoch_start(hooks.trainer, hooks.module)
    hooks.train(20, 1.0)
    hooks.end_epoch()
    assert hooks.scheduler.factor.total_steps == 60
    hooks.wall.on_train_epoch_start(hooks.trainer, hooks.module)
    hooks.train(12, 3.0)
    assert hooks.scheduler.factor.total_steps == 60 and not hooks.trainer.should_stop
