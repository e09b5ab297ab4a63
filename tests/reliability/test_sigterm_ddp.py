"""SIGTERM under ``trainer=ddp_cpu`` (2 processes, gloo): a scheduler pre-empting the job signals
every process (``scancel``), in no order, or one of them (a ``kill``); here each rank signals
itself after the same optimizer step, or rank 1 alone in the middle of a step. The ranks stop
together, ``last.ckpt`` holds that step, the run exits 143 without hanging and leaves no process
behind, and ``ckpt_path=last`` resumes under DDP."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch
from cli import TINY_WITH_BAR
from reliability_support import run

# 12 train images / 2 ranks / batch 4: 2 steps an epoch; step 3 is mid-way through the second
STEPS_PER_EPOCH, TERM_AT = 2, 3


def _processes_in(folder: Path) -> list[int]:
    """The pids whose working directory is ``folder`` (the run's ranks)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")) == folder:
                    pids.append(int(entry.name))
            except OSError:  # gone, or not ours
                pass
    return pids


def _ddp_run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    try:
        return run("train", args, cwd, timeout=150)  # a hang is killed (process group) here
    except subprocess.TimeoutExpired as hung:
        out = (hung.stdout or "") + (hung.stderr or "")
        pytest.fail(f"the DDP run hung (killed after 150 s):\n{out[-3000:]}")


@pytest.mark.parametrize(
    "who", [[], ["+callbacks.term.rank=1", "+callbacks.term.mid_step=true"]],
    ids=["every-rank-at-a-step-end", "rank-1-alone-mid-step"],
)  # fmt: skip
def test_ddp_sigterm_saves_last_at_one_step_for_every_rank_exits_143_and_resumes(
    tmp_path, shapes_root, who
):
    common = ["trainer=ddp_cpu", "schedule=smoke", f"paths.shapes_dir={shapes_root}",
              *TINY_WITH_BAR, "trainer.max_epochs=2"]  # fmt: skip
    term = ["+callbacks.term._target_=reliability_support.TermAtStep",
            f"+callbacks.term.step={TERM_AT}", *who]  # fmt: skip
    stopped = _ddp_run([*common, *term], tmp_path)
    out = stopped.stdout + stopped.stderr
    assert stopped.returncode == 143, out[-3000:]
    assert "MEMBER: 2/2" in out
    (run_dir,) = (tmp_path / "outputs" / "shapes").iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(last, weights_only=True)
    assert (state["global_step"], state["epoch"]) == (TERM_AT, 1)
    assert (
        f"SIGTERM: training stopped during training at global step {TERM_AT} (epoch 1); "
        f"last.ckpt (global step {TERM_AT}) is {last}. To resume, rerun the command with "
        "ckpt_path=last." in out
    )
    assert out.count("SIGTERM: training stopped") == 1  # rank 0 only
    deadline = time.monotonic() + 30  # rank 1 exits on its own, moments after rank 0
    while _processes_in(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _processes_in(tmp_path)

    resumed = _ddp_run([*common, "ckpt_path=last", "test=false"], tmp_path)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    assert f"ckpt_path=last -> {last}" in out and "MEMBER: 2/2" in out
    new_dir = re.findall(r"^run directory: (.+)$", resumed.stdout, flags=re.M)[0]
    final = torch.load(f"{new_dir}/checkpoints/last.ckpt", weights_only=True)
    assert (final["global_step"], final["epoch"]) == (2 * STEPS_PER_EPOCH, 1)
