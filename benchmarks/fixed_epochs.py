"""Train a budget-scheduled preset for exactly N epochs (N may be fractional), whatever the
machine's speed.

The shapes preset's schedule (``budget_schedule`` + WallBudget) plans its epochs from the
measured epoch time, so two runs of the same lever on a VM whose speed drifts get different
epoch counts and cannot be compared. Here WallBudget is told that every epoch took
``budget / N`` seconds and validation none: it plans N epochs (``--epochs 7.5``: seven and the
first half of an eighth, as a machine with that epoch time gets), the lr follows the same cosine
as on that machine, and the runs are deterministic (same seed, data in the main process), so AP
differences between runs are the levers' alone. Wall time is not measured here (the preset's
``trainer.max_time`` hard stop is lifted); speed comes from ``bench_shapes_profile.py``.

Run: ``python benchmarks/fixed_epochs.py --epochs 8 [--budget-min 6.5] [hydra overrides]``
(defaults to ``experiment=shapes``; the run directory is Hydra's, or ``hydra.run.dir=...``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from detr_lightning import budget


def fix_epochs(epoch_s: float) -> None:
    """Make every WallBudget report ``epoch_s`` seconds of training per epoch and no
    validation time."""
    measured = budget.WallBudget.on_train_epoch_end

    def on_train_epoch_end(self: budget.WallBudget, trainer: Any, pl_module: Any) -> None:
        self._epoch_start = time.perf_counter() - epoch_s
        self._val_s = self._last_val_s = 0.0
        measured(self, trainer, pl_module)

    budget.WallBudget.on_train_epoch_end = on_train_epoch_end


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=float, default=8.0)
    parser.add_argument("--budget-min", type=float, default=6.5)
    args, overrides = parser.parse_known_args()
    # 1e-3 epoch of slack: the clock runs on between the patch and WallBudget's reading, and
    # that millisecond must not cost the plan its last step.
    fix_epochs(args.budget_min * 60 / (args.epochs + 1e-3))
    if not any(o.startswith("experiment=") for o in overrides):
        overrides.insert(0, "experiment=shapes")
    # The preset's max_time is a hard stop on the real clock, which means nothing here: a busy
    # machine would cut the planned epochs short.
    sys.argv = [sys.argv[0], "trainer.max_time=null", *overrides,
                f"model.lr_schedule.budget_min={args.budget_min}"]  # fmt: skip
    from detr_lightning.train import main as train_main

    train_main()


if __name__ == "__main__":
    main()
