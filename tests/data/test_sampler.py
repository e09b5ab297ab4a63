"""Aspect-ratio grouped batches: every image once per epoch, homogeneous groups, DDP-safe."""

import numpy as np
import pytest
import torch
from lightning_loaders import rank_1_of_2, requested_training_loader
from torch.utils.data import DistributedSampler, RandomSampler

from detr_lightning.data.sampler import (
    AspectRatioGroupedBatchSampler,
    aspect_ratio_groups,
    image_sizes,
)


def _coco_like_sizes(n: int, seed: int = 0) -> np.ndarray:
    """[n, 2] (h, w): about 70 % landscape, the rest portrait or square, long side 480-640."""
    rng = np.random.default_rng(seed)
    long = rng.integers(480, 641, n)
    short = (long / rng.choice([4 / 3, 3 / 2, 1.0, 16 / 9], n)).astype(int)
    landscape = rng.random(n) < 0.7
    return np.stack([np.where(landscape, short, long), np.where(landscape, long, short)], 1)


def _mixed(batches: list[list[int]], groups: list[int]) -> int:
    return sum(len({groups[i] for i in b}) > 1 for b in batches)


@pytest.mark.parametrize("n, batch_size", [(101, 4), (64, 8), (7, 2), (3, 5)])
def test_every_image_once_per_epoch_and_groups_homogeneous(n: int, batch_size: int) -> None:
    groups = aspect_ratio_groups(_coco_like_sizes(n))
    gen = torch.Generator().manual_seed(0)
    sampler = AspectRatioGroupedBatchSampler(RandomSampler(range(n), generator=gen), groups,
                                             batch_size)  # fmt: skip
    for _ in range(2):  # two epochs, two different orders
        batches = list(sampler)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(n))  # every image exactly once
        assert len(batches) == len(sampler) == -(-n // batch_size)
        assert all(len(b) == batch_size for b in batches[:-1])
        # only the tail (the leftovers of the two groups merged) may mix orientations
        assert _mixed(batches, groups) <= 1
        assert _mixed(batches[:-2], groups) == 0


def test_groups_follow_orientation_and_custom_bins() -> None:
    sizes = np.array([[480, 640], [640, 480], [500, 500], [100, 300]])  # (h, w)
    assert aspect_ratio_groups(sizes) == [1, 0, 0, 1]
    assert aspect_ratio_groups(sizes, bins=(0.9, 1.1, 2.0)) == [2, 0, 1, 3]


def test_drop_last_gives_floor_batches_all_full() -> None:
    groups = aspect_ratio_groups(_coco_like_sizes(50))
    sampler = AspectRatioGroupedBatchSampler(range(50), groups, 8, drop_last=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6 and all(len(b) == 8 for b in batches)


def test_ranks_get_equal_batch_counts_and_cover_every_image() -> None:
    n, world, bs = 103, 3, 4
    groups = aspect_ratio_groups(_coco_like_sizes(n, seed=1))
    per_rank = []
    for rank in range(world):
        dist = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=0)
        sampler = AspectRatioGroupedBatchSampler(dist, groups, bs)
        sampler.set_epoch(3)
        per_rank.append(list(sampler))
        assert _mixed(per_rank[-1], groups) <= 1
    assert len({len(b) for b in per_rank}) == 1  # DDP: every rank takes the same step count
    assert {i for batches in per_rank for b in batches for i in b} == set(range(n))


def test_lightning_reinstantiates_it_around_a_distributed_sampler(tmp_path) -> None:
    sizes = [(64, 48), (48, 64), (80, 40), (40, 80), (64, 64), (96, 48), (72, 64), (32, 64)]
    dm, loader = requested_training_loader(tmp_path, sizes, grouped=True)
    groups = aspect_ratio_groups(image_sizes(dm.datasets["train"]))
    assert groups == [1, 0, 1, 0, 0, 1, 1, 0]  # sizes are (w, h); 4 + 4: no mixed tail
    for batch in loader:  # real batches: padded to one orientation only
        assert len({bool(t["size"][1] > t["size"][0]) for t in batch.targets}) == 1
    ddp_loader, dist = rank_1_of_2(dm, loader)
    assert isinstance(ddp_loader.batch_sampler, AspectRatioGroupedBatchSampler)
    assert ddp_loader.batch_sampler.sampler is dist
    assert len(ddp_loader.batch_sampler) == 2  # 4 of the 8 images per rank, batches of 2


def test_set_epoch_reshuffles_the_wrapped_distributed_sampler() -> None:
    """Lightning calls set_epoch on the batch sampler; the DistributedSampler inside must get
    it, or every epoch repeats epoch 0's order. One group: the batches are that order cut in
    fours."""
    n = 20

    def order(epoch: int) -> list[int]:
        dist = DistributedSampler(range(n), num_replicas=1, rank=0, shuffle=True, seed=0)
        dist.set_epoch(epoch)
        return list(dist)

    dist = DistributedSampler(range(n), num_replicas=1, rank=0, shuffle=True, seed=0)
    sampler = AspectRatioGroupedBatchSampler(dist, [0] * n, 4)
    sampler.set_epoch(1)
    expected = order(1)
    assert expected != order(0)
    assert list(sampler) == [expected[i : i + 4] for i in range(0, n, 4)]
