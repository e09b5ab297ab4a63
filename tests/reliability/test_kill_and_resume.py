"""kill -9 at a random step, then ``ckpt_path=last``: at most one checkpoint interval is lost and
training continues with the optimizer and scheduler state of that checkpoint (minutes: slow)."""

from __future__ import annotations

import json
import random
import re
import signal
from pathlib import Path

import pytest
import torch
from cli import INFER_TINY, TINY
from reliability_support import run

INTERVAL = 2
STEPS_PER_EPOCH, EPOCHS = 3, 3


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=True, map_location="cpu")


def _adam_steps(ckpt: dict) -> set[float]:
    return {float(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()}


@pytest.mark.slow
def test_kill_9_then_resume_last_loses_at_most_one_interval(tmp_path, shapes_root) -> None:
    kill_at = random.Random().randint(3, STEPS_PER_EPOCH * EPOCHS - 1)
    common = ["schedule=smoke", f"paths.shapes_dir={shapes_root}", *TINY,
              f"trainer.max_epochs={EPOCHS}", f"trainer.limit_train_batches={STEPS_PER_EPOCH}",
              f"callbacks.model_checkpoint.every_n_train_steps={INTERVAL}"]  # fmt: skip
    killed = run("train", [*common, "+callbacks.kill._target_=reliability_support.KillAtStep",
                           f"+callbacks.kill.step={kill_at}"], tmp_path)  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, f"kill at {kill_at}: " + killed.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "shapes").iterdir()
    saved = _load(run_dir / "checkpoints" / "last.ckpt")
    assert kill_at - INTERVAL <= saved["global_step"] < kill_at, (kill_at, saved["global_step"])
    assert not list((run_dir / "checkpoints").glob("*.tmp"))  # no write was in flight

    # what the checkpoint restores cannot be changed on the way: refused before training
    assert saved["callbacks"]["RecipeRecord"]["recipe"]["model.optimizer.lr"] > 0
    refused = run("train", [*common, "ckpt_path=last", "model.optimizer.lr=5e-5"], tmp_path)
    assert refused.returncode != 0 and "model.optimizer.lr: " in refused.stderr

    probe = tmp_path / "probe.json"
    resumed = run("train", [*common, "ckpt_path=last", "test=false",
                            "+callbacks.probe._target_=reliability_support.ResumeProbe",
                            f"+callbacks.probe.path={probe}"], tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (
        f"ckpt_path=last -> {run_dir / 'checkpoints' / 'last.ckpt'}"
        in resumed.stdout + resumed.stderr
    )
    state = json.loads(probe.read_text())  # what the resumed run started with
    assert state["global_step"] == saved["global_step"]
    assert set(state["adam_steps"]) == _adam_steps(saved) == {float(saved["global_step"])}
    assert state["sched_last_epoch"] == saved["lr_schedulers"][0]["last_epoch"]
    assert state["lrs"] == [g["lr"] for g in saved["optimizer_states"][0]["param_groups"]]

    new_dir = Path(re.findall(r"^run directory: (.+)$", resumed.stdout, flags=re.M)[0])
    final = _load(new_dir / "checkpoints" / "last.ckpt")
    total = STEPS_PER_EPOCH * EPOCHS
    assert final["global_step"] == total and _adam_steps(final) == {float(total)}
    done = total - saved["global_step"]
    assert final["lr_schedulers"][0]["last_epoch"] - state["sched_last_epoch"] == done

    # eval and predict find the newest last.ckpt of the experiment (the resumed run's) too.
    for module in ("eval", "predict"):
        tiny = TINY if module == "eval" else INFER_TINY  # predict refuses trainer.*, callbacks.*
        proc = run(module, [f"paths.shapes_dir={shapes_root}", *tiny, "ckpt_path=last"], tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (
            f"ckpt_path=last -> {new_dir / 'checkpoints' / 'last.ckpt'}"
            in proc.stdout + proc.stderr
        )
