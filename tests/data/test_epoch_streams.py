"""EpochStreams: a run resumed from a checkpoint written mid-epoch trains the interrupted epoch's
remaining batches in that epoch's order (not the epoch's first ones again), then whole epochs."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lit import fake_batch, quiet_trainer, tiny_lit
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from detr_lightning.data.collate import Batch
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


# Resumed with another batch size: the epoch goes on at the first image not trained


class _SeenAll(_Seen):
    """(epoch, image id) of every image of every training batch, and the epochs ended."""

    def __init__(self, save_at: int | None = None, path: str = "") -> None:
        super().__init__(save_at, path)
        self.ended: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.extend((trainer.current_epoch, int(t["image_id"])) for t in batch.targets)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.ended.append(trainer.current_epoch)


def _images_loader(size: int, images: int) -> DataLoader:
    data = [fake_batch(i, size=32, batch=1) for i in range(images)]
    order = EpochRandomSampler(data, seed=3)

    def collate(items):
        return Batch(torch.cat([b.pixel_values for b in items]),
                     torch.cat([b.pixel_mask for b in items]),
                     [b.targets[0] for b in items])  # fmt: skip

    return DataLoader(data, batch_sampler=ResumableBatchSampler(order, size, drop_last=False),
                      collate_fn=collate)  # fmt: skip


def _fit_images(tmp_path, size: int, seen: _SeenAll, ckpt_path=None, streams=None) -> None:
    trainer = quiet_trainer(tmp_path, max_epochs=EPOCHS, limit_val_batches=0,
                            callbacks=[seen, streams or EpochStreams(seed=3)])  # fmt: skip
    trainer.fit(tiny_lit(), train_dataloaders=_images_loader(size, 10), ckpt_path=ckpt_path)


@pytest.mark.parametrize(
    ("old", "save_at", "new"),
    [(2, 3, 4), (4, 1, 3), (3, 4, 2)],
    ids=["2-to-4", "4-to-3", "epoch-end-3-to-2"],
)
def test_a_mid_epoch_resume_at_another_batch_size_trains_each_image_of_the_epoch_once(
    tmp_path, caplog, old: int, save_at: int, new: int
) -> None:
    full = _SeenAll(save_at, str(tmp_path / "at.ckpt"))
    _fit_images(tmp_path / "full", old, full)
    trained = full.seen[: old * save_at]  # 3 x 4 batches: the whole epoch 0 of 10 images
    resumed = _SeenAll()
    with caplog.at_level("INFO"):
        _fit_images(tmp_path / "resumed", new, resumed, ckpt_path=str(tmp_path / "at.ckpt"))
    epoch0 = [i for e, i in full.seen if e == 0]
    # before, Lightning's count taken as batches of the new size: 2-to-4 skipped 12 images (6
    # trained), 4-to-3 skipped 3 (4 trained: one of them again)
    assert [i for e, i in resumed.seen if e == 0] == epoch0[len(trained) :]
    epoch1 = [i for e, i in full.seen if e == 1]
    # the next epoch is whole (epoch-end-3-to-2, before: its first batch only, Lightning's count
    # of 4 batches done kept for an epoch of 5)
    assert [i for e, i in resumed.seen if e == 1] == epoch1
    if save_at * old < 10:
        assert resumed.ended == [0, 1]
        assert "not trained before the stop" in caplog.text
    else:
        assert resumed.ended == [1]


def test_a_resumed_epoch_with_no_batch_left_at_the_new_layout_ends_without_training_again(
    tmp_path, caplog
) -> None:
    # 10 images at batch 1, saved after 9: resumed as rank 0 of 2 processes at batch 2 (its own
    # DistributedSampler, as Lightning makes under DDP), the last image cannot be shared by the
    # 2 ranks, so no batch of epoch 0 is left. Before, Lightning's count was set to the epoch's
    # 3 batches, which it takes as an epoch over before it started: it trained epoch 0 again.
    full = _SeenAll(9, str(tmp_path / "at.ckpt"))
    _fit_images(tmp_path / "full", 1, full)
    loader = _images_loader(2, 10)
    rank_0 = DistributedSampler(loader.dataset, num_replicas=2, rank=0, seed=3)
    loader = DataLoader(loader.dataset, batch_sampler=ResumableBatchSampler(rank_0, 2, False),
                        collate_fn=loader.collate_fn)  # fmt: skip
    resumed = _SeenAll()
    trainer = quiet_trainer(tmp_path / "resumed", max_epochs=EPOCHS, limit_val_batches=0,
                            callbacks=[resumed, EpochStreams(seed=3)])  # fmt: skip
    with caplog.at_level("INFO"):
        trainer.fit(tiny_lit(), train_dataloaders=loader, ckpt_path=str(tmp_path / "at.ckpt"))
    assert [e for e, _ in resumed.seen] == [1] * 5  # epoch 1: rank 0's 5 images
    assert resumed.ended == [0, 1] and trainer.global_step == 9 + 3
    assert "no batch of it is left at this layout (9 of its 10 images were trained" in caplog.text
    assert "1 image(s) of this epoch are left out" in caplog.text


def test_a_checkpoint_without_the_layout_resumes_at_the_batch_count(tmp_path) -> None:
    # written before the layout was recorded: its count of batches taken as batches of the new
    # size, as before (batch 2 stopped after 2 batches, resumed at batch 4: epoch 0's last 2)
    class Unrecorded(EpochStreams):
        def state_dict(self):
            return {}

    full = _SeenAll(2, str(tmp_path / "at.ckpt"))
    _fit_images(tmp_path / "full", 2, full, streams=Unrecorded(seed=3))
    resumed = _SeenAll()
    _fit_images(tmp_path / "resumed", 4, resumed, ckpt_path=str(tmp_path / "at.ckpt"))
    epoch0 = [i for e, i in full.seen if e == 0]
    assert [i for e, i in resumed.seen if e == 0] == epoch0[8:]
    assert [i for e, i in resumed.seen if e == 1] == [i for e, i in full.seen if e == 1]
