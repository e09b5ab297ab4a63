"""A run stopped after an epoch and resumed with ``ckpt_path=last`` trains exactly as the run that
was not stopped: same order, same augmentation and dropout draws, same weights (CPU, data in the
main process)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from cli import TINY
from reliability_support import run


def _train(args: list[str], cwd: Path) -> dict:
    cwd.mkdir(parents=True, exist_ok=True)
    proc = run("train", args, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = re.findall(r"^run directory: (.+)$", proc.stdout, flags=re.M)[0]
    return torch.load(f"{folder}/checkpoints/last.ckpt", weights_only=True)


def test_a_resumed_run_ends_with_the_weights_of_the_uninterrupted_one(
    tmp_path, shapes_root
) -> None:
    common = ["schedule=smoke", f"paths.shapes_dir={shapes_root}", *TINY, "trainer.max_epochs=2",
              "test=false"]  # fmt: skip
    straight = _train(common, tmp_path / "straight")
    stop = [
        "+callbacks.stop._target_=reliability_support.StopAfterEpoch",
        "+callbacks.stop.epoch=0",
    ]
    assert _train([*common, *stop], tmp_path / "stopped")["global_step"] == 3
    resumed = _train([*common, "ckpt_path=last"], tmp_path / "stopped")
    assert resumed["global_step"] == straight["global_step"] == 6
    differing = [k for k, v in straight["state_dict"].items()
                 if not torch.equal(v, resumed["state_dict"][k])]  # fmt: skip
    assert differing == []
