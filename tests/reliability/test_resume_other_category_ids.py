"""Resuming a run on data whose category ids differ from the checkpoint's (the same classes,
re-exported with other ids) is refused before training as a checkpoint error naming both id
lists and the fix; nothing is written (it failed inside ``fit`` as a bad file found in training,
and wrote a copy of the resumed checkpoint as the new run's last.ckpt)."""

from __future__ import annotations

import json

from cli import TINY
from reliability_support import run


def test_resume_on_other_category_ids_is_refused_before_training(tmp_path, shapes_root) -> None:
    common = ["schedule=smoke", f"paths.shapes_dir={shapes_root}", *TINY, "trainer.max_epochs=1",
              "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "test=false"]  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trained = run("train", common, tmp_path / "a")
    assert trained.returncode == 0, trained.stderr[-3000:]
    (first,) = (tmp_path / "a" / "outputs" / "shapes").iterdir()
    ckpt = first / "checkpoints" / "last.ckpt"

    shifted = {}
    for split in ("train", "val"):
        data = json.loads((shapes_root / "annotations" / f"instances_{split}.json").read_text())
        for category in data["categories"]:
            category["id"] += 10
        for annotation in data["annotations"]:
            annotation["category_id"] += 10
        shifted[split] = tmp_path / f"shifted_{split}.json"
        shifted[split].write_text(json.dumps(data))
    custom = ["data=custom", f"data.train_images={shapes_root / 'train'}",
              f"data.train_ann={shifted['train']}", f"data.val_images={shapes_root / 'val'}",
              f"data.val_ann={shifted['val']}"]  # fmt: skip
    resumed = run("train", [*common, *custom, "trainer.max_epochs=2", f"ckpt_path={ckpt}"],
                  tmp_path / "b")  # fmt: skip
    out = resumed.stdout + resumed.stderr
    assert resumed.returncode == 1, out[-3000:]
    assert "Training stopped at global step" not in out, out[-3000:]
    assert (
        "CheckpointLoadError: the checkpoint's class head was trained on category ids "
        "[1, 2, 3, 4, 5]"
        in out
        and "[11, 12, 13, 14, 15]" in out
    ), out[-3000:]
    assert "model.init_detector=" in out and "Traceback" not in out
    assert not list((tmp_path / "b" / "outputs").rglob("*.ckpt"))
