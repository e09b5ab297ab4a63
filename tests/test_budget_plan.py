"""budget_plan.plan_steps against plans worked out by hand (WallBudget's runs: test_budget.py)."""

from types import SimpleNamespace

from detr_lightning.budget_plan import plan_steps

# 100 s budget, validation at most 10 % of the time
SCHEDULER = SimpleNamespace(budget_s=100.0, max_val_share=0.1)


def test_the_steps_that_fit_and_the_validation_spacing() -> None:
    # val 5 s vs train 10 s: every n >= 5 x 0.9 / (0.1 x 10) = 4.5 -> 5 epochs; what is left
    # after 20 s spent and the final validation, 75 s, holds 75 / (10 + 5 / 5) = 6.82 epochs
    # of 10 steps -> 68 steps
    assert plan_steps(SCHEDULER, 20.0, 5.0, 10.0, 10.0, None, 20, True) == (68, 5)
    # a cheap validation (0.5 s): every epoch (n >= 0.45); 79.5 s left, 79.5 / 10.5 = 7.57
    # epochs -> 75 steps
    assert plan_steps(SCHEDULER, 20.0, 0.5, 10.0, 10.0, None, 20, True) == (75, 1)


def test_a_cap_bounds_the_last_step() -> None:
    # max_epochs=5 at step 20 of 10-step epochs: 30 steps left, fewer than the 68 that fit
    assert plan_steps(SCHEDULER, 20.0, 5.0, 10.0, 10.0, 5, 20, True) == (30, 5)
    assert plan_steps(SCHEDULER, 20.0, 5.0, 10.0, 10.0, 50, 20, True) == (68, 5)


def test_a_spent_budget_trains_one_step_more_only_when_the_last_epoch_did_not_validate() -> None:
    spent = (SCHEDULER, 99.0, 5.0, 10.0, 10.0)
    assert plan_steps(*spent, None, 20, True) == (0, 5)
    assert plan_steps(*spent, None, 20, False) == (1, 5)  # the next epoch validates
    assert plan_steps(*spent, 2, 20, False) == (0, 5)  # the cap is reached: nothing more


def test_a_plan_that_fits_a_whole_number_of_steps_keeps_its_last_step() -> None:
    # 0.7 s left for steps of 0.1 s is 7 steps, though 0.7 / 0.1 is 6.999... in floating point
    tiny = SimpleNamespace(budget_s=1.0, max_val_share=0.1)
    assert plan_steps(tiny, 0.3, 0.0, 0.1, 1.0, None, 0, True) == (7, 1)
