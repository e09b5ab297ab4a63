"""Ctrl-C while training, as a terminal sends it (SIGINT to the run and its data workers): the
first stops after the batch with last.ckpt written at that step, says so, exits 130, and
``ckpt_path=last`` continues there; the workers outlive the signal; a second Ctrl-C stops at
once, saving nothing more."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from cli import TINY
from reliability_support import run, stopped_run

STEPS_PER_EPOCH, CTRL_C_AT = 3, 4  # in the second epoch; its first end wrote step 3


def _common(shapes_root: Path) -> list[str]:
    return ["schedule=smoke", f"paths.shapes_dir={shapes_root}", *TINY, "data.num_workers=2",
            "trainer.max_epochs=2", f"trainer.limit_train_batches={STEPS_PER_EPOCH}",
            "trainer.limit_val_batches=2"]  # fmt: skip


def _ctrl_c(again: bool) -> list[str]:
    return ["+callbacks.ctrl_c._target_=reliability_support.CtrlCAtStep",
            f"+callbacks.ctrl_c.step={CTRL_C_AT}", f"+callbacks.ctrl_c.again={again}"]  # fmt: skip


def test_a_first_ctrl_c_saves_last_at_that_step_exits_130_and_resumes(
    tmp_path, shapes_root
) -> None:
    common = _common(shapes_root)
    out, _, last = stopped_run([*common, *_ctrl_c(again=False)], tmp_path, CTRL_C_AT, 1,
                               "training", "Ctrl-C", 130)  # fmt: skip
    assert out.count("Ctrl-C: stopping after this batch") == 1  # the workers left it alone
    assert "Received SIGTERM" not in out  # Lightning's line for the handler it runs here
    workers = json.loads((tmp_path / "workers.json").read_text())
    assert len(workers["workers"]) >= 2 and workers["alive"] == workers["workers"]
    assert torch.load(last, weights_only=True)["global_step"] == CTRL_C_AT

    resumed = run("train", [*common, "ckpt_path=last", "test=false"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    new_dir = re.findall(r"^run directory: (.+)$", resumed.stdout, flags=re.M)[0]
    final = torch.load(f"{new_dir}/checkpoints/last.ckpt", weights_only=True)
    assert final["global_step"] == 2 * STEPS_PER_EPOCH


def test_a_second_ctrl_c_stops_at_once_and_saves_nothing_more(tmp_path, shapes_root) -> None:
    stopped = run("train", [*_common(shapes_root), *_ctrl_c(again=True)], tmp_path)
    out = stopped.stdout + stopped.stderr
    assert stopped.returncode == 1, out[-3000:]
    assert "Ctrl-C: training stopped" not in out and "KeyboardInterrupt" in out
    (last,) = (tmp_path / "outputs" / "shapes").glob("*/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == STEPS_PER_EPOCH  # epoch end's
