"""A run stopped mid-epoch and resumed with another ``data.batch_size`` (a noted setting, only
logged) trains each image of the interrupted epoch once: the resumed epoch goes on at the first
image the run had not reached (data/resumable_batches.py), through a real checkpoint."""

from __future__ import annotations

import json
import signal

import torch
from reliability_support import run, seen_images_run

from detr_lightning.data.epoch_sampler import EpochRandomSampler

IMAGES = 12  # the shapes_root fixture's training images


def test_a_run_stopped_mid_epoch_resumes_at_another_batch_size_on_its_next_image(
    tmp_path, shapes_root
) -> None:
    seen = tmp_path / "seen.jsonl"
    common = seen_images_run(shapes_root, seen)
    # batch 4, last.ckpt every step, killed after step 2 (its save lost): resumed at step 1,
    # after 4 images of epoch 0
    stopped = run("train", [*common, "callbacks.model_checkpoint.every_n_train_steps=1",
                            "+callbacks.kill._target_=reliability_support.KillAtStep",
                            "+callbacks.kill.step=2"], tmp_path)  # fmt: skip
    assert stopped.returncode == -signal.SIGKILL, stopped.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "shapes").iterdir()
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 1
    assert saved["callbacks"]["EpochStreams"]["layout"]["batch_size"] == 4
    first = [tuple(json.loads(line)) for line in seen.read_text().splitlines()]
    assert len(first) == 8  # step 2 trained, but not saved
    first = first[:4]
    seen.unlink()

    resumed = run("train", [*common, "ckpt_path=last", "data.batch_size=2"], tmp_path)
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    assert "data.batch_size: 4 in the run, 2 here" in out  # the noted change
    assert "not trained before the stop (4 were)" in out, out[-6000:]
    rest = [tuple(json.loads(line)) for line in seen.read_text().splitlines()]
    # the 8 others, in batches of 2: 4 steps (before: 5 of the new size after Lightning's count
    # of 1, images 3 and 4 of the epoch trained again)
    assert len(rest) == IMAGES - 4 and {e for e, _ in rest} == {0}
    assert sorted(i for _, i in first + rest) == sorted({i for _, i in first + rest})
    new_dir = next(d for d in (tmp_path / "outputs" / "shapes").iterdir() if d != run_dir)
    final = torch.load(new_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["global_step"] == 1 + (IMAGES - 4) // 2


def test_a_resume_at_another_batch_size_under_accumulation_and_a_limit_steps_as_logged(
    tmp_path, shapes_root
) -> None:
    # batch 2, trainer.accumulate_grad_batches=2, last.ckpt every step, SIGTERM after batch 2:
    # saved at step 1 (4 images). Resumed at batch 3 under trainer.limit_train_batches=3: the
    # epoch's 4 batches at batch 3 less the 3 left ([3, 3, 2]) count as 1 done, so Lightning
    # steps after 1 batch (its count at 2), then at the limit's batch 3: 3 images and 3 images
    # (a run at batch 3 steps on 6 then 3). The log line said 3 batches.
    steps = tmp_path / "steps.jsonl"
    common = [*seen_images_run(shapes_root, tmp_path / "seen.jsonl"), "data.batch_size=2",
              "trainer.accumulate_grad_batches=2",
              "+callbacks.steps._target_=reliability_support.StepImages",
              f"+callbacks.steps.path={steps}"]  # fmt: skip
    stopped = run("train", [*common, "callbacks.model_checkpoint.every_n_train_steps=1",
                            "+callbacks.term._target_=reliability_support.TermAfterBatch",
                            "+callbacks.term.batch=2"], tmp_path)  # fmt: skip
    assert stopped.returncode == 143, (stopped.stdout + stopped.stderr)[-3000:]
    sampler = EpochRandomSampler(range(IMAGES), seed=42)  # train.yaml's seed: epoch 0's order
    order = [i + 1 for i in sampler]  # the shapes images' ids
    assert [json.loads(line) for line in steps.read_text().splitlines()] == [[0, order[:4]]]
    steps.unlink()

    resumed = run("train", [*common, "ckpt_path=last", "data.batch_size=3",
                            "trainer.limit_train_batches=3"], tmp_path)  # fmt: skip
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, out[-3000:]
    after = [json.loads(line) for line in steps.read_text().splitlines()]
    assert after == [[0, order[4:7]], [0, order[7:10]]]
    assert ("not trained before the stop (4 were), 2 batches on each process (trainer."
            "limit_train_batches ends its epochs at 3 batches, 1 counted as done; 3 are left in "
            "its order); no image left out; the first optimizer step after it accumulates 1 of "
            "its trainer.accumulate_grad_batches=2 batches (1 counted as done)") in out, out[-6000:]  # fmt: skip
