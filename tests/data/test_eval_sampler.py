"""WholeBatchDistributedSampler: under DDP each rank evaluates whole single-process batches, so
the detections equal one process's (brute force over sizes; a real 2-process gloo validation)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from ddp_workers import start_method, tensors_by_file_name
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from detr_lightning.data.eval_sampler import WholeBatchDistributedSampler
from detr_lightning.data.shapes import generate_shapes_dataset
from detr_lightning.utils import conf_dir


def _rank_batches(n: int, batch: int, ranks: int) -> list[list[tuple[int, ...]]]:
    """Each rank's batches as a DataLoader with ``batch_size=batch`` cuts its indices."""
    out = []
    for rank in range(ranks):
        sampler = WholeBatchDistributedSampler(list(range(n)), batch, ranks, rank)
        loader = DataLoader(list(range(n)), batch_size=batch, sampler=sampler)
        out.append([tuple(b.tolist()) for b in loader])
    return out


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
@pytest.mark.parametrize("batch", [1, 2, 3, 4])
def test_ranks_get_the_single_process_batches_in_equal_numbers(batch: int, ranks: int) -> None:
    for n in range(1, 14):
        single = [tuple(range(s, min(s + batch, n))) for s in range(0, n, batch)]
        per_rank = _rank_batches(n, batch, ranks)
        assert len({len(b) for b in per_rank}) == 1, (n, per_rank)  # DDP stays in step
        assert len(per_rank[0]) == -(-len(single) // ranks)
        seen = [b for rank in per_rank for b in rank]
        assert set(seen) == set(single), (n, per_rank)  # no batch of other composition
        # each batch once, except the repeats that even out the ranks (fewer than one per rank)
        assert len(seen) - len(single) < ranks


def test_two_ranks_hand_dealt() -> None:
    """5 images, batches of 2: [0 1] [2 3] [4]; rank 0 takes batches 0 and 2, rank 1 batch 1
    and a repeat of batch 0."""
    assert _rank_batches(5, 2, 2) == [[(0, 1), (4,)], [(2, 3), (0, 1)]]
    # 7 images in 3s on 2 ranks: [0 1 2] [3 4 5] [6]; 9 images in 2s on 4 ranks: 5 batches
    assert _rank_batches(7, 3, 2) == [[(0, 1, 2), (6,)], [(3, 4, 5), (0, 1, 2)]]
    assert _rank_batches(9, 2, 4) == [[(0, 1), (8,)], [(2, 3), (0, 1)], [(4, 5), (2, 3)],
                                      [(6, 7), (4, 5)]]  # fmt: skip


class _Detections(L.Callback):
    """Writes each evaluated image's detections (scores, boxes) to ``<dir>/rank<r>.json``."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir, self.seen = out_dir, {}

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, *args) -> None:
        for pred, target in zip(outputs["preds"], batch.targets, strict=True):
            self.seen[int(target["image_id"])] = [pred["scores"].tolist(), pred["boxes"].tolist()]

    def on_validation_end(self, trainer, *args) -> None:
        (Path(self.out_dir) / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


def test_ddp_validation_detects_what_one_process_does_at_batch_2(tmp_path) -> None:
    """7 shapes images of different sizes, validation batches of 2, a random-init tiny model:
    the detections of every image on 2 gloo ranks equal the single process's (Lightning's own
    sampler deals images to ranks in turn, so the batch mates, the padding and the
    detections differ)."""
    from datetime import timedelta

    from cli import TINY
    from lightning.pytorch.strategies import DDPStrategy

    from detr_lightning.utils.build import build_datamodule, build_model

    root = generate_shapes_dataset(tmp_path / "shapes", train=2, val=7)
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"paths.shapes_dir={root}", *TINY,
                                          "data.val_batch_size=2"])  # fmt: skip
    torch.manual_seed(0)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    common = dict(accelerator="cpu", logger=False, enable_progress_bar=False,
                  enable_model_summary=False, enable_checkpointing=False)  # fmt: skip
    for name, kwargs in [
        ("single", dict(devices=1)),
        ("ddp", dict(devices=2, strategy=DDPStrategy(start_method=start_method(),
                     process_group_backend="gloo", timeout=timedelta(seconds=60)))),
    ]:  # fmt: skip
        (tmp_path / name).mkdir()
        trainer = L.Trainer(default_root_dir=tmp_path, callbacks=[_Detections(str(tmp_path / name))],
                            **common, **kwargs)  # fmt: skip
        with tensors_by_file_name():
            trainer.validate(model, datamodule=datamodule, verbose=False)
    single = json.loads((tmp_path / "single" / "rank0.json").read_text())
    ddp = {}
    for rank in (0, 1):
        ddp.update(json.loads((tmp_path / "ddp" / f"rank{rank}.json").read_text()))
    assert sorted(ddp) == sorted(single) and len(single) == 7
    for image_id, (scores, boxes) in single.items():
        assert torch.allclose(torch.tensor(ddp[image_id][0]), torch.tensor(scores), atol=1e-6)
        assert torch.allclose(torch.tensor(ddp[image_id][1]), torch.tensor(boxes), atol=1e-4)
