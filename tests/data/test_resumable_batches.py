"""Resumable batch samplers: a pass can start at a given batch of the epoch, once; under DDP
Lightning keeps the class around its DistributedSampler."""

from __future__ import annotations

import pytest
from lightning_loaders import rank_1_of_2, requested_training_loader
from torch.utils.data import BatchSampler, DistributedSampler

from detr_lightning.data.batch_layout import BatchLayout, ResumedEpoch
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


# Resumed with another batch layout: the position is one of images (data/resumable_batches.py).


def _epoch(sampler, epoch: int = 2) -> list[int]:
    sampler.set_epoch(epoch)
    return [int(i) for i in sampler]


def _pass(batches, epoch: int = 2) -> list[list[int]]:
    batches.sampler.set_epoch(epoch)  # Lightning, before the pass
    return [[int(i) for i in b] for b in batches]


@pytest.mark.parametrize(
    ("new_size", "sizes"), [(3, [3, 3, 2]), (6, [6, 2]), (8, [8]), (1, [1] * 8)]
)
def test_another_batch_size_goes_on_at_the_first_image_not_trained(new_size, sizes) -> None:
    # 20 images, batch 4, stopped after 3 batches: 12 images trained; the epoch's other 8 follow
    order = EpochRandomSampler(list(range(20)), seed=4)
    images = _epoch(order)
    batches = ResumableBatchSampler(order, new_size, drop_last=False)
    order.set_epoch(2)
    plan = batches.resume_after(3, BatchLayout(batch_size=4))
    assert plan == ResumedEpoch(batches_done=len(batches) - len(sizes), batches_left=len(sizes),
                                images=20, images_trained=12, images_left_out=0)  # fmt: skip
    resumed = _pass(batches)
    assert [len(b) for b in resumed] == sizes
    assert [i for b in resumed for i in b] == images[12:]
    # before: start_at(3), Lightning's count as batches of the new size
    batches.start_at(3)
    before = [i for b in _pass(batches) for i in b]
    assert before != images[12:]
    assert _pass(batches) == [images[i : i + new_size] for i in range(0, 20, new_size)]  # whole


def test_the_same_layout_replayed_is_the_start_at_the_batch_count() -> None:
    order = EpochRandomSampler(list(range(11)), seed=4)
    for grouped in (False, True):
        if grouped:
            batches = AspectRatioGroupedBatchSampler(order, [i % 3 == 0 for i in range(11)], 3)
        else:
            batches = ResumableBatchSampler(order, 3, drop_last=False)
        whole = _pass(batches)
        order.set_epoch(2)
        plan = batches.resume_after(2, batches.layout())
        assert plan.batches_done == 2 and plan.images_left_out == 0
        assert _pass(batches) == whole[2:]


def test_another_batch_size_of_the_grouped_sampler_trains_each_remaining_image_once() -> None:
    # group 1 = every third image; batch 4 stopped after 3 batches, resumed at batch 3
    order = EpochRandomSampler(list(range(20)), seed=4)
    groups = [int(i % 3 == 0) for i in range(20)]
    old = AspectRatioGroupedBatchSampler(order, groups, 4)
    trained = [i for b in _pass(old)[:3] for i in b]
    new = AspectRatioGroupedBatchSampler(order, groups, 3)
    order.set_epoch(2)
    plan = new.resume_after(3, old.layout())
    assert (plan.images_trained, plan.images_left_out, plan.batches_left) == (12, 0, 3)
    resumed = _pass(new)
    rest = [i for i in _epoch(order) if i not in trained]  # the 8 others, in the epoch's order
    assert resumed == list(new.batches_of(rest, 3))  # grouped again at the new size
    assert sorted(i for b in resumed for i in b) == sorted(rest)
    assert all(len({groups[i] for i in b}) == 1 for b in resumed[:-1])  # the tail may mix


def test_a_grouped_run_resumed_ungrouped_cannot_be_replayed() -> None:
    order = EpochRandomSampler(list(range(8)), seed=4)
    batches = ResumableBatchSampler(order, 2, drop_last=False)
    assert batches.resume_after(1, BatchLayout(2, 1, grouped=True)) is None
    assert len(_pass(batches)) == 4  # nothing planned


def _wrapped(data, rank: int):
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    return DistributedSamplerWrapper(EpochRandomSampler(data, seed=7), num_replicas=2, rank=rank)


@pytest.mark.parametrize(
    "distributed",
    [lambda data, rank: DistributedSampler(data, num_replicas=2, rank=rank, drop_last=True),
     _wrapped],
    ids=["drop_last", "lightnings-wrapper"],
)  # fmt: skip
def test_an_order_cut_per_rank_or_wrapped_by_lightning_cannot_be_replayed(distributed) -> None:
    # drop_last: the ranks read 3 positions each of 7 (no padding, the 7th is dropped), not the
    # padded order the replay deals out; Lightning's wrapper of another sampler: the order comes
    # from the wrapped sampler, rebuilt on each iteration
    data = list(range(7))
    for rank in range(2):
        batches = ResumableBatchSampler(distributed(data, rank), 2, drop_last=False)
        batches.sampler.set_epoch(2)
        whole = _pass(batches)
        batches.sampler.set_epoch(2)
        assert batches.resume_after(1, BatchLayout(1, 1)) is None
        assert _pass(batches) == whole  # nothing planned: the rank's whole epoch


def test_one_process_and_lightnings_distributed_sampler_share_the_epochs_order() -> None:
    # why a run can go from 1 to N processes mid-epoch: the same permutation for seed + epoch
    data = list(range(20))
    assert _epoch(EpochRandomSampler(data, seed=7)) == _epoch(
        DistributedSampler(data, num_replicas=1, rank=0, seed=7)
    )


def _ranks(data, world: int, size: int, grouped: list[int] | None = None):
    out = []
    for rank in range(world):
        dist = DistributedSampler(data, num_replicas=world, rank=rank, seed=7)
        if grouped is None:
            out.append(ResumableBatchSampler(dist, size, drop_last=False))
        else:
            out.append(AspectRatioGroupedBatchSampler(dist, grouped, size))
    return out


@pytest.mark.parametrize(
    ("old", "new", "trained", "left_out", "positions"),
    [
        # 2 x 3 after 2 batches: positions 0..11 trained; 3 ranks of 2 go on at 12
        ((3, 2), (2, 3), 12, 0, [[12, 15, 18], [13, 16, 19], [14, 17, 20]]),
        # 1 x 4 after 2 batches: 0..7 trained; 12 left for 3 ranks, and rank 2's padding (20,
        # the epoch's first image again) is dropped, not its first image (8 was left out)
        ((4, 1), (2, 3), 8, 0, [[9, 12, 15, 18], [10, 13, 16, 19], [8, 11, 14, 17]]),
        # 1 x 2 after 2 batches: 0..3 trained; 16 cannot be shared by 3: rank 1 leaves out 4,
        # rank 2 its padding
        ((2, 1), (2, 3), 4, 1, [[6, 9, 12, 15, 18], [7, 10, 13, 16, 19], [5, 8, 11, 14, 17]]),
        # 3 x 2 after 2 batches: 0..11 trained; one process takes 12..19
        ((2, 3), (3, 1), 12, 0, [list(range(12, 20))]),
    ],
    ids=["2x3-to-3x2", "1x4-to-3x2", "1x2-to-3x2", "3x2-to-1x3"],
)
def test_another_number_of_processes_goes_on_at_the_images_position(
    old, new, trained, left_out, positions
) -> None:
    data = list(range(20))
    order = _epoch(DistributedSampler(data, num_replicas=1, rank=0, seed=7))
    padded = order + order  # position p >= 20 is DistributedSampler's padding, order[p - 20]
    (old_size, old_world), (new_size, new_world) = old, new
    if new_world == 1:
        samplers = [ResumableBatchSampler(EpochRandomSampler(data, seed=7), new_size, False)]
    else:
        samplers = _ranks(data, new_world, new_size)
    got, plans = [], []
    for batches in samplers:
        batches.sampler.set_epoch(2)
        plans.append(batches.resume_after(2, BatchLayout(old_size, old_world)))
        got.append(_pass(batches))
    assert [[i for b in g for i in b] for g in got] == [[padded[p] for p in ps] for ps in positions]
    assert {(p.images_trained, p.images_left_out) for p in plans} == {(trained, left_out)}
    assert len({len(g) for g in got}) == 1  # as many batches on every rank
    assert {p.batches_done for p in plans} == {len(samplers[0]) - len(got[0])}


def test_another_number_of_processes_of_the_grouped_sampler() -> None:
    # 2 ranks x batch 2, grouped, stopped after 2 batches; resumed on 3 ranks x batch 2
    data, groups = list(range(20)), [int(i % 3 == 0) for i in range(20)]
    old = _ranks(data, 2, 2, groups)
    trained = set()
    for batches in old:
        trained.update(i for b in _pass(batches)[:2] for i in b)
    assert len(trained) == 8
    new = _ranks(data, 3, 2, groups)
    got, plans = [], []
    for batches in new:
        batches.sampler.set_epoch(2)
        plans.append(batches.resume_after(2, old[0].layout()))
        got.append([i for b in _pass(batches) for i in b])
    assert len({len(g) for g in got}) == 1
    left_out = plans[0].images_left_out
    assert left_out < 3 and {p.images_left_out for p in plans} == {left_out}
    everything = [i for g in got for i in g]
    # no image trained before the stop again: DistributedSampler's padding (21 positions for 20
    # images: the epoch's first one again) is what a rank with one more drops
    assert not set(everything) & trained
    unread = [i for i in range(20) if i not in trained]
    assert len(set(everything)) == len(everything) == len(unread) - left_out


@pytest.mark.parametrize(("images", "grouped"), [(7, False), (13, False), (20, False),
                                               (13, True), (20, True)])  # fmt: skip
def test_no_image_is_trained_again_after_a_stop_where_one_is_left_out(images, grouped) -> None:
    # Every resume of 1..3 processes x batch 1..3 onto another such layout: the ranks get as
    # many batches, fewer than the processes are left out, the count is exact, and an image
    # trained before the stop comes again only as DistributedSampler's padding where nothing is
    # left out. Before, a rank with one more position kept its padding (an image trained before
    # the stop) and left out a new one, and the count could name 2 where 1 was (7 images, 1 x 1
    # after 1 batch, onto 3 ranks). Aspect-ratio grouped batches train positions out of the
    # order's: 13 images after one batch of 2 on 3 ranks, resumed on 2, left 2 out.
    data = list(range(images))
    groups = [int(i % 3 == 0) for i in data] if grouped else None

    def samplers(size: int, world: int) -> list:
        if world > 1:
            return _ranks(data, world, size, groups)
        order = EpochRandomSampler(data, seed=7)
        if grouped:
            return [AspectRatioGroupedBatchSampler(order, groups, size)]
        return [ResumableBatchSampler(order, size, False)]

    layouts = [(s, w) for s in (1, 2, 3) for w in (1, 2, 3)]
    for old_size, old_world in layouts:
        per_rank = -(-images // old_world)
        for done in range(1, -(-per_rank // old_size)):
            trained = {i for b in samplers(old_size, old_world) for i in _flat(_pass(b)[:done])}
            for size, world in layouts:
                if (size, world) == (old_size, old_world):
                    continue
                got, plans = [], []
                for batches in samplers(size, world):
                    batches.sampler.set_epoch(2)
                    before = BatchLayout(old_size, old_world, grouped)
                    plans.append(batches.resume_after(done, before))
                    got.append(_pass(batches))
                after = _flat(b for g in got for b in g)
                left_out = len(set(data) - trained - set(after))
                case = (old_size, old_world, done, size, world)
                assert len({len(g) for g in got}) == 1, case
                assert {p.images_left_out for p in plans} == {left_out}, case
                assert left_out < world, case
                assert not (left_out and trained & set(after)), case
                assert len(after) - len(set(after)) <= world - 1, case


def _flat(batches) -> list[int]:
    return [int(i) for b in batches for i in b]
