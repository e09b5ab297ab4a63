"""The same run with the data in the main process or in persistent worker processes trains on the
same augmented images and ends with the same weights (data/sample_seeds.py)."""

from __future__ import annotations

from pathlib import Path

import torch
from cli import TINY
from reliability_support import train_to_last_checkpoint


def _weights(args: list[str], cwd: Path) -> dict[str, torch.Tensor]:
    return train_to_last_checkpoint(args, cwd)["state_dict"]


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
