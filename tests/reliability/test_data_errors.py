"""A bad image found only when its batch is read (a truncated file passes the header check)
stops the run with its message alone, after ``last.ckpt`` was written at the last step; once the
file is fixed, ``ckpt_path=last`` goes on from there."""

from __future__ import annotations

import shutil

import torch
from cli import TINY
from reliability_support import run


def test_a_truncated_val_image_costs_no_training_and_the_run_resumes(tmp_path, shapes_root) -> None:
    data = tmp_path / "shapes"
    shutil.copytree(shapes_root, data)
    image = sorted((data / "val").iterdir())[1]
    intact = image.read_bytes()
    image.write_bytes(intact[: len(intact) // 2])
    common = ["schedule=smoke", f"paths.shapes_dir={data}", *TINY, "trainer.max_epochs=2",
              "test=false"]  # fmt: skip
    stopped = run("train", common, tmp_path)
    out = stopped.stdout + stopped.stderr
    assert stopped.returncode == 1, out[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "shapes").iterdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3  # epoch 0's three steps
    assert f"ImageLoadError: Cannot decode image {image}" in out
    assert (
        f"Training stopped at global step 3 (epoch 0); last.ckpt (global step 3) is {last}. "
        "Once the file is fixed (or its record removed from the json), rerun the command with "
        "ckpt_path=last to go on from there." in out
    )
    assert "Traceback" not in out

    image.write_bytes(intact)
    resumed = run("train", [*common, "ckpt_path=last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"ckpt_path=last -> {last}" in resumed.stdout + resumed.stderr
