"""Resumable batch samplers: a pass can start at a given batch of the epoch, once; under DDP
Lightning keeps the class around its DistributedSampler."""

from __future__ import annotations

import pytest
from lightning_loaders import rank_1_of_2, requested_training_loader
from torch.utils.data import BatchSampler

from detr_lightning.data.epoch_sampler import EpochRandomSampler
from detr_lightning.data.resumable_batches import ResumableBatchSampler
from detr_lightning.data.sampler import AspectRatioGroupedBatchSampler


@pytest.mark.parametrize("grouped", [False, True])
def test_the_next_pass_starts_at_the_batch_given_and_the_one_after_is_whole(grouped) -> None:
    order = EpochRandomSampler(list(range(11)), seed=4)
    if grouped:
        batches = AspectRatioGroupedBatchSampler(order, [i % 3 == 0 for i in range(11)], 3)
    else:
        batches = ResumableBatchSampler(order, 3, drop_last=False)

    def epoch_1() -> list[list[int]]:
        order.set_epoch(1)  # what Lightning calls before every pass
        return list(batches)

    epoch = epoch_1()
    assert len(epoch) == len(batches) == 4
    if not grouped:  # consecutive chunks of the order, as torch's BatchSampler
        order.set_epoch(1)
        assert epoch == list(BatchSampler(order, 3, drop_last=False))
    batches.start_at(3)
    unread = iter(batches)  # a DataLoader worker iterator makes one and drops it
    del unread
    assert epoch_1() == epoch[3:]
    assert epoch_1() == epoch  # the start holds for one pass


def test_a_negative_start_is_refused() -> None:
    with pytest.raises(ValueError, match="start_at"):
        ResumableBatchSampler(range(4), 2, drop_last=False).start_at(-1)


def test_lightning_keeps_the_plain_one_around_a_distributed_sampler(tmp_path) -> None:
    dm, loader = requested_training_loader(tmp_path, [(64, 48)] * 6, grouped=False)
    assert isinstance(loader.batch_sampler, ResumableBatchSampler)
    ddp_loader, dist = rank_1_of_2(dm, loader)
    batches = ddp_loader.batch_sampler
    assert isinstance(batches, ResumableBatchSampler) and batches.sampler is dist
    whole = list(batches)
    assert [len(b) for b in whole] == [2, 1]  # 3 of the 6 images on this rank
    batches.start_at(1)
    assert list(batches) == whole[1:]
