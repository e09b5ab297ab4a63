"""A run stopped mid-epoch on one process and resumed under ``trainer=ddp_cpu`` (2 processes,
gloo) with another ``data.batch_size`` trains each image of the interrupted epoch once, end to
end: the ranks go on at the images the run had not reached (data/resumable_batches.py), every
rank gets as many batches (no hang), and the epoch ends after the last of them."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter

import pytest
import torch
from reliability_support import run, seen_images_run

from detr_lightning.data.shapes import generate_shapes_dataset

IMAGES = 13  # odd: on 2 ranks DistributedSampler pads the epoch's order with its first image


@pytest.mark.slow  # about 45 s: two CLI runs, one of them 2 DDP processes
def test_a_single_process_run_stopped_mid_epoch_resumes_on_2_processes_training_each_image_once(
    tmp_path,
) -> None:
    root = generate_shapes_dataset(tmp_path / "shapes", train=IMAGES, val=2)
    seen = tmp_path / "seen.jsonl"  # both ranks append [epoch, image id] lines
    common = seen_images_run(root, seen)
    # one process, batch 3, stopped by SIGTERM after step 1: last.ckpt at step 1, 3 images done
    stopped = run("train", [*common, "data.batch_size=3",
                            "callbacks.model_checkpoint.every_n_train_steps=1",
                            "+callbacks.term._target_=reliability_support.TermAtStep",
                            "+callbacks.term.step=1"], tmp_path)  # fmt: skip
    assert stopped.returncode == 143, (stopped.stdout + stopped.stderr)[-3000:]
    before = [tuple(json.loads(line)) for line in seen.read_text().splitlines()]
    assert len(before) == 3
    seen.unlink()

    # 2 processes, batch 2: 10 images left, positions 3..12 of the epoch's order and rank 1's
    # padding (position 13, the order's first image, trained before the stop). Rank 1 drops its
    # padding, so each rank trains 5 images in 3 batches. Before, it dropped position 3 instead:
    # one image left out (a warning said so) and the first one trained twice.
    try:
        resumed = run("train", [*common, "trainer=ddp_cpu", "data.batch_size=2",
                                "ckpt_path=last"], tmp_path, timeout=300)  # fmt: skip
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"the DDP resume hung:\n{((hung.stdout or '') + (hung.stderr or ''))[-3000:]}")
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    assert "MEMBER: 2/2" in out
    assert ("(the run: batch size 3 x 1 process(es), 1 batches done; now: batch size 2 x 2 "
            "process(es)): its order goes on at the first of its 13 images not trained before "
            "the stop (3 were), 3 batches on each process; no image left out") in out, out[-6000:]  # fmt: skip
    assert out.count("no image left out") == 1, out[-6000:]  # rank 0 says it for the run
    assert "left out, so that" not in out
    after = [tuple(json.loads(line)) for line in seen.read_text().splitlines()]
    assert {e for e, _ in before + after} == {0}
    assert Counter(i for _, i in before + after) == Counter(range(1, IMAGES + 1))
    # the epoch's 4 batches per rank at batch 2, the first counted as done: 3 steps, then it ends
    new_dir = re.findall(r"^run directory: (.+)$", resumed.stdout, flags=re.M)[0]
    final = torch.load(f"{new_dir}/checkpoints/last.ckpt", weights_only=True)
    assert final["global_step"] == 1 + 3
    progress = final["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert progress["completed"] == 4  # the epoch's batches at this layout: it ended there
