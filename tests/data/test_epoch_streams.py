"""EpochStreams: a run resumed from a checkpoint written mid-epoch trains the interrupted epoch's
remaining batches in that epoch's order (not the epoch's first ones again), then whole epochs."""

from __future__ import annotations

import lightning as L
import pytest
from lit import fake_batch, quiet_trainer, tiny_lit
from torch.utils.data import BatchSampler, DataLoader

from detr_lightning.data.epoch_sampler import EpochRandomSampler
from detr_lightning.data.epoch_streams import EpochStreams
from detr_lightning.data.resumable_batches import ResumableBatchSampler
from detr_lightning.data.sampler import AspectRatioGroupedBatchSampler

IMAGES, EPOCHS = 6, 2


class _Seen(L.Callback):
    """(epoch, image id) of every training batch; saves a checkpoint after step ``save_at``."""

    def __init__(self, save_at: int | None = None, path: str = "") -> None:
        self.seen: list[tuple[int, int]] = []
        self.save_at, self.path = save_at, path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append((trainer.current_epoch, int(batch.targets[0]["image_id"])))

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.save_at:
            trainer.save_checkpoint(self.path)


def _loader(kind: str, workers: int) -> DataLoader:
    data = [fake_batch(i, size=32) for i in range(IMAGES)]
    order = EpochRandomSampler(data, seed=3)
    batches = {
        "plain": lambda: ResumableBatchSampler(order, 1, drop_last=False),
        "grouped": lambda: AspectRatioGroupedBatchSampler(order, [i % 2 for i in range(IMAGES)], 1),
        "torch": lambda: BatchSampler(order, 1, drop_last=False),
    }[kind]()
    return DataLoader(data, batch_sampler=batches, collate_fn=lambda items: items[0],
                      num_workers=workers, generator=None)  # fmt: skip


def _fit(tmp_path, kind: str, workers: int, seen: _Seen, ckpt_path: str | None = None) -> None:
    trainer = quiet_trainer(tmp_path, max_epochs=EPOCHS, limit_val_batches=0,
                            callbacks=[seen, EpochStreams(seed=3)])  # fmt: skip
    trainer.fit(tiny_lit(), train_dataloaders=_loader(kind, workers), ckpt_path=ckpt_path)


@pytest.mark.parametrize(
    ("kind", "workers", "save_at"),
    [("plain", 0, 2), ("grouped", 0, 4), ("plain", 2, 8), ("plain", 0, IMAGES)],
    ids=["epoch0", "grouped-epoch0", "workers-epoch1", "epoch-end"],
)
def test_a_mid_epoch_resume_trains_the_remaining_batches_of_the_uninterrupted_run(
    tmp_path, kind: str, workers: int, save_at: int
) -> None:
    full = _Seen(save_at, str(tmp_path / "at.ckpt"))
    _fit(tmp_path / "full", kind, workers, full)
    assert len({i for e, i in full.seen if e == 0}) == IMAGES  # every image once an epoch
    resumed = _Seen()
    _fit(tmp_path / "resumed", kind, workers, resumed, ckpt_path=str(tmp_path / "at.ckpt"))
    # before the fix: the interrupted epoch's first batches again
    assert resumed.seen == full.seen[save_at:]


def test_a_batch_sampler_that_cannot_start_part_way_restarts_the_epoch_with_a_warning(
    tmp_path, caplog
) -> None:
    full = _Seen(2, str(tmp_path / "at.ckpt"))
    _fit(tmp_path / "full", "torch", 0, full)
    resumed = _Seen()
    _fit(tmp_path / "resumed", "torch", 0, resumed, ckpt_path=str(tmp_path / "at.ckpt"))
    assert "restart its order" in caplog.text
    epoch0 = [i for _, i in full.seen[: IMAGES - 2]]  # the epoch's first batches, again
    assert [i for _, i in resumed.seen[: IMAGES - 2]] == epoch0
    assert resumed.seen[IMAGES - 2 :] == full.seen[IMAGES:]
