"""SIGTERM (pre-emption, scancel, docker stop): last.ckpt is written at the step the run stopped,
the run says so and exits 143 (not 0, also in a sweep), and ``ckpt_path=last`` continues there."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from cli import TINY
from reliability_support import run, stopped_run

from detr_lightning.run_dirs import load_run

STEPS_PER_EPOCH, TERM_AT = 3, 5  # mid-way through the second epoch; its first end wrote step 3


def _common(shapes_root: Path) -> list[str]:
    return ["schedule=smoke", f"paths.shapes_dir={shapes_root}", *TINY, "trainer.max_epochs=2",
            f"trainer.limit_train_batches={STEPS_PER_EPOCH}"]  # fmt: skip


def test_sigterm_saves_last_at_that_step_exits_143_and_resumes(tmp_path, shapes_root) -> None:
    common = _common(shapes_root)
    term = ["+callbacks.term._target_=reliability_support.TermAtStep",
            f"+callbacks.term.step={TERM_AT}"]  # fmt: skip
    _, run_dir, last = stopped_run([*common, *term], tmp_path, TERM_AT, 1, "training")
    assert torch.load(last, weights_only=True)["global_step"] == TERM_AT > STEPS_PER_EPOCH

    # a limit that ends before the checkpoint's epoch would train nothing and exit 0: refused
    cut = run("train", [*common, "trainer.max_epochs=1", f"ckpt_path={last}"], tmp_path)
    assert cut.returncode == 1 and "trainer.max_epochs=1 ends training before that epoch, so " \
        "the resumed run would train nothing" in cut.stdout + cut.stderr  # fmt: skip
    assert [p.name for p in (tmp_path / "outputs" / "shapes").glob("*/checkpoints/*")] == [
        p.name for p in (run_dir / "checkpoints").iterdir()]  # fmt: skip

    resumed = run("train", [*common, "ckpt_path=last", "test=false"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"ckpt_path=last -> {last}" in resumed.stdout + resumed.stderr
    new_dir = re.findall(r"^run directory: (.+)$", resumed.stdout, flags=re.M)[0]
    final = torch.load(f"{new_dir}/checkpoints/last.ckpt", weights_only=True)
    assert final["global_step"] == 2 * STEPS_PER_EPOCH  # one step left after the stop
    record = json.loads((Path(new_dir) / "resumed_from.json").read_text())
    assert record == {"run": str(run_dir), "checkpoint": str(last), "global_step": TERM_AT}
    # the report's curve of the resumed run: the first run's epoch-0 validation, then its own
    assert [p["epoch"] for p in load_run(Path(new_dir)).curve] == [0.0, 1.0]

    # an evaluation stopped so says it and exits 143 (Lightning's exception would exit 0)
    infer = [
        a
        for a in common
        if not a.startswith(
            ("data.train_transforms", "schedule=", "trainer.max_epochs", "trainer.limit_train")
        )
    ]
    evaluated = run("eval", [*infer, f"ckpt_path={last}", "trainer.limit_test_batches=2",
                             "+callbacks.term._target_=reliability_support.TermInTest"],
                    tmp_path)  # fmt: skip
    out = evaluated.stdout + evaluated.stderr
    assert evaluated.returncode == 143, out[-3000:]
    assert "SIGTERM: evaluation stopped before its end; no metrics.json was written." in out
    (eval_dir,) = (tmp_path / "outputs" / "shapes").glob("eval_*")
    assert not (eval_dir / "metrics.json").exists()

    sweep = tmp_path / "sweep"
    swept = run("train", ["-m", *common, *term, f"hydra.sweep.dir={sweep}", "seed=1"], tmp_path)
    assert swept.returncode == 143  # a sweep does not report success
    assert f"rerun the sweep command with ckpt_path=auto hydra.sweep.dir={sweep}" in (
        swept.stdout + swept.stderr
    )


def test_sigterm_during_validation_saves_the_last_training_step_and_resumes(
    tmp_path, shapes_root
) -> None:
    """SIGTERM while the first epoch validates: Lightning stops at that validation batch's end,
    last.ckpt holds the epoch's last training step (3), exit 143. The resume finishes epoch 0
    without rerunning its interrupted validation (Lightning resumes a validation only when its
    batch was cut mid-way, never one stopped between batches), then trains and validates epoch 1."""
    common = _common(shapes_root)
    term = ["+callbacks.term._target_=reliability_support.TermInValidation"]
    out, _, last = stopped_run([*common, *term], tmp_path, STEPS_PER_EPOCH, 0, "validation")
    state = torch.load(last, weights_only=True)
    assert (state["global_step"], state["epoch"]) == (STEPS_PER_EPOCH, 0)
    # the validation had run one of its two batches; no top-k file (no val/AP yet)
    val_progress = state["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"]
    assert val_progress["current"]["completed"] == 1
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]

    resumed = run("train", [*common, "ckpt_path=last", "test=false"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    new_dir = Path(re.findall(r"^run directory: (.+)$", resumed.stdout, flags=re.M)[0])
    final = torch.load(new_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (final["global_step"], final["epoch"]) == (2 * STEPS_PER_EPOCH, 1)
    # epoch 0's validation is not rerun: the only validation point is epoch 1's
    assert [p["epoch"] for p in load_run(new_dir).curve] == [1.0]
    assert [p.name[:9] for p in (new_dir / "checkpoints").glob("epoch*.ckpt")] == ["epoch001-"]


def test_sigterm_in_the_sanity_check_names_it_and_does_not_send_to_ckpt_path_last(
    tmp_path, shapes_root
) -> None:
    """Nothing written yet: ``ckpt_path=last`` would fail, or take another run of the
    experiment; the line says to rerun the same command."""
    term = ["+callbacks.term._target_=reliability_support.TermInValidation",
            "+callbacks.term.sanity_check=true", "trainer.num_sanity_val_steps=2"]  # fmt: skip
    stopped = run("train", [*_common(shapes_root), *term], tmp_path)
    out = stopped.stdout + stopped.stderr
    assert stopped.returncode == 143, out[-3000:]
    assert (
        "SIGTERM: training stopped during the sanity check at global step 0 (epoch 0); no "
        "checkpoint was written by this run. To resume, rerun the same command (not with "
        "ckpt_path=last: that is another run's)." in out
    )
