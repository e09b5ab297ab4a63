"""A run stopped after an epoch or mid-epoch and resumed with ``ckpt_path=last`` trains exactly as
the run that was not stopped: same order, same augmentation and dropout draws, same weights (CPU;
data in the main process, in worker processes made every epoch, or in persistent ones)."""

from __future__ import annotations

import pytest
import torch
from cli import TINY
from reliability_support import run, train_to_last_checkpoint


@pytest.mark.parametrize(
    ("workers", "epochs", "stop_after"),
    [
        (["data.num_workers=0"], 2, 0),
        # stopped after epoch 1: the resumed epoch 2 needs worker seeds other than the second
        # ones the training loader's generator draws
        (["data.num_workers=2", "data.persistent_workers=false"], 3, 1),
        # stopped after epoch 0: the resumed run makes its one evaluation iterator again at
        # epoch 1's end (the uninterrupted one made it at epoch 0's), and epoch 2 trains after
        (["data.num_workers=1", "data.persistent_workers=true"], 3, 0),
    ],
    ids=["main-process", "workers", "persistent-workers"],
)
def test_a_resumed_run_ends_with_the_weights_of_the_uninterrupted_one(
    tmp_path, shapes_root, workers, epochs, stop_after
) -> None:
    # with workers, the resumed epoch ran in epoch 0's order with other worker seeds before
    # data/epoch_streams.py
    tiny = [a for a in TINY if not a.startswith("data.num_workers=")]
    common = ["schedule=smoke", f"paths.shapes_dir={shapes_root}", *tiny, *workers,
              f"trainer.max_epochs={epochs}", "test=false"]  # fmt: skip
    straight = train_to_last_checkpoint(common, tmp_path / "straight")
    stop = [
        "+callbacks.stop._target_=reliability_support.StopAfterEpoch",
        f"+callbacks.stop.epoch={stop_after}",
    ]
    stopped = train_to_last_checkpoint([*common, *stop], tmp_path / "stopped")
    assert stopped["global_step"] == 3 * (stop_after + 1)
    resumed = train_to_last_checkpoint([*common, "ckpt_path=last"], tmp_path / "stopped")
    assert resumed["global_step"] == straight["global_step"] == 3 * epochs
    differing = [k for k, v in straight["state_dict"].items()
                 if not torch.equal(v, resumed["state_dict"][k])]  # fmt: skip
    assert differing == []


@pytest.mark.parametrize(
    "workers",
    [["data.num_workers=0"], ["data.num_workers=2", "data.persistent_workers=true"]],
    ids=["main-process", "persistent-workers"],
)
def test_a_run_resumed_after_a_sigterm_mid_epoch_ends_with_the_weights_of_the_uninterrupted_one(
    tmp_path, shapes_root, workers
) -> None:
    """SIGTERM after step 4, the second of epoch 1's three: the resume trains that epoch's last
    two batches (data/epoch_streams.py) with the generators as they were at the stop and, with
    persistent workers (whose generators no checkpoint holds, and which had loaded other
    batches before), the same augmentation of those batches (data/sample_seeds.py)."""
    tiny = [a for a in TINY if not a.startswith("data.num_workers=")]
    common = ["schedule=smoke", f"paths.shapes_dir={shapes_root}", *tiny, *workers,
              "trainer.max_epochs=2", "test=false"]  # fmt: skip
    straight = train_to_last_checkpoint(common, tmp_path / "straight")
    term = ["+callbacks.term._target_=reliability_support.TermAtStep", "+callbacks.term.step=4"]
    (tmp_path / "stopped").mkdir()
    stopped = run("train", [*common, *term], tmp_path / "stopped")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    resumed = train_to_last_checkpoint([*common, "ckpt_path=last"], tmp_path / "stopped")
    assert resumed["global_step"] == straight["global_step"] == 6
    # before: the resumed epoch trained on its first two batches again, with the generators of
    # the process start
    differing = [k for k, v in straight["state_dict"].items()
                 if not torch.equal(v, resumed["state_dict"][k])]  # fmt: skip
    assert differing == []
