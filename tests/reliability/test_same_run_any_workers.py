"""The same run with the data in the main process or in persistent worker processes trains on the
same augmented images and ends with the same weights (data/sample_seeds.py)."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from cli import TINY
from reliability_support import run


def _weights(args: list[str], cwd: Path) -> dict[str, torch.Tensor]:
    cwd.mkdir(parents=True)
    proc = run("train", args, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = re.findall(r"^run directory: (.+)$", proc.stdout, flags=re.M)[0]
    return torch.load(f"{folder}/checkpoints/last.ckpt", weights_only=True)["state_dict"]


def test_a_run_ends_with_the_same_weights_with_and_without_data_workers(
    tmp_path, shapes_root
) -> None:
    tiny = [a for a in TINY if not a.startswith("data.num_workers=")]
    common = ["schedule=smoke", f"paths.shapes_dir={shapes_root}", *tiny,
              "trainer.max_epochs=2", "test=false"]  # fmt: skip
    main = _weights([*common, "data.num_workers=0"], tmp_path / "main")
    # persistent ones (the COCO presets'); the loader test covers workers made every epoch
    workers = _weights([*common, "data.num_workers=2", "data.persistent_workers=true"],
                       tmp_path / "workers")  # fmt: skip
    # before: each process drew the augmentation from its own generators
    assert [k for k, v in main.items() if not torch.equal(v, workers[k])] == []
