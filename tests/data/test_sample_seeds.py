"""Each training sample's augmentation is a function of (seed, epoch, index): the same with any
number of workers, persistent or not, and when a pass starts part-way (a mid-epoch resume), and
the process's own random streams are left as they were."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch
from coco_files import write_coco
from torch.utils.data import DistributedSampler, SequentialSampler

from detr_lightning.data.datamodule import DetrDataModule
from detr_lightning.data.epoch_sampler import EpochRandomSampler
from detr_lightning.data.sample_seeds import (
    SeededIndex,
    SeededSamples,
    sample_seed,
    seeded_indices,
)
from detr_lightning.data.transforms import make_train_transforms

IMAGES = 6


def _datamodule(tmp_path, workers: int, persistent: bool) -> DetrDataModule:
    sizes = [(40 + 7 * i, 56 - 3 * i) for i in range(IMAGES)]
    boxes = [{"id": i, "image_id": i, "category_id": 1, "bbox": [2, 3, 20, 18]}
             for i in range(1, IMAGES + 1)]  # fmt: skip
    images, ann = write_coco(tmp_path, sizes, boxes)
    torch.manual_seed(7)  # the run's seed, as seed_everything leaves it
    augment = make_train_transforms(scales=(24, 32, 40), max_size=64, crop_resize_scales=(36,),
                                    crop_size=(16, 30))  # fmt: skip
    return DetrDataModule(images, ann, batch_size=2, num_workers=workers,
                          persistent_workers=persistent, train_transforms=augment)  # fmt: skip


def _epochs(loader, epochs: range, start_at: int = 0) -> dict[tuple[int, int], tuple]:
    """{(epoch, image id): (image, boxes)} of the loader's passes; the last one from batch
    ``start_at``."""
    out = {}
    for epoch in epochs:
        loader.batch_sampler.sampler.set_epoch(epoch)
        if epoch == epochs[-1]:
            loader.batch_sampler.start_at(start_at)
        for batch in loader:
            for image, target in zip(batch.pixel_values, batch.targets, strict=True):
                h, w = (int(v) for v in target["size"])
                out[(epoch, int(target["image_id"]))] = (image[:, :h, :w], target["boxes"])
    return out


@pytest.mark.parametrize(("workers", "persistent"), [(2, False), (2, True)],
                         ids=["workers", "persistent-workers"])  # fmt: skip
def test_an_images_augmentation_is_the_same_with_any_number_of_workers(
    tmp_path, workers: int, persistent: bool
) -> None:
    main = _epochs(_datamodule(tmp_path / "a", 0, False).train_dataloader(), range(2))
    other = _epochs(_datamodule(tmp_path / "b", workers, persistent).train_dataloader(), range(2))
    assert main.keys() == other.keys() and len(main) == 2 * IMAGES
    for key, (image, boxes) in main.items():
        assert torch.equal(image, other[key][0]) and torch.equal(boxes, other[key][1]), key
    # the draws are random: an image is augmented differently in the two epochs
    sizes = {(e, i): tuple(image.shape) for (e, i), (image, _) in main.items()}
    assert any(sizes[(0, i)] != sizes[(1, i)] for i in range(1, IMAGES + 1))


def test_persistent_workers_resumed_part_way_load_what_the_uninterrupted_pass_loads(
    tmp_path,
) -> None:
    whole = _epochs(_datamodule(tmp_path / "a", 2, True).train_dataloader(), range(2))
    # the resumed process's workers have loaded epoch 0 before; their own generators moved on
    loader = _datamodule(tmp_path / "b", 2, True).train_dataloader()
    resumed = _epochs(loader, range(2), start_at=1)
    tail = {k: v for k, v in resumed.items() if k[0] == 1}
    assert len(tail) == IMAGES - 2  # batches of 2: the first one skipped
    for key, (image, boxes) in tail.items():
        assert torch.equal(image, whole[key][0]) and torch.equal(boxes, whole[key][1]), key


class _Draws:
    """A dataset whose item is three random draws: torch's, numpy's and Python's."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[float, float, float]:
        return float(torch.rand(())), float(np.random.rand()), random.random()


def _process_draws() -> tuple[float, float, float]:
    return _Draws()[0]


def _seed_process(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def test_a_seeded_load_leaves_the_process_streams_as_they_were() -> None:
    data = SeededSamples(_Draws())
    _seed_process(1)
    expected = _process_draws()
    _seed_process(1)
    first = data[SeededIndex(2, seed=11)]
    assert _process_draws() == expected  # the load drew nothing from the process's streams
    other_stream = data[SeededIndex(2, seed=11)]  # after other draws, in another state
    assert first == other_stream
    assert data[SeededIndex(2, seed=12)] != first


def test_a_plain_index_draws_from_the_process_streams() -> None:
    data = SeededSamples(_Draws())
    _seed_process(1)
    expected = _process_draws()
    _seed_process(1)
    assert data[2] == expected


def test_a_seeded_index_is_an_index_and_keeps_its_seed_through_pickling() -> None:
    index = SeededIndex(1, seed=2**62 + 5)
    assert ["a", "b", "c"][index] == "b" and np.arange(5)[index] == 1
    copy = pickle.loads(pickle.dumps(index))  # how it reaches a worker process
    assert copy == 1 and copy.seed == 2**62 + 5


def test_an_image_gets_the_same_seed_on_any_ddp_rank_and_in_one_process() -> None:
    data = list(range(10))
    one = EpochRandomSampler(data, seed=5)
    one.set_epoch(3)
    seeds = {int(i): i.seed for i in seeded_indices(list(one), one)}
    for rank in (0, 1):
        dist = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=5)
        dist.set_epoch(3)
        for i in seeded_indices(list(dist), dist):
            assert i.seed == seeds[int(i)] == sample_seed(5, 3, int(i))
    # seeds differ between images and between epochs
    assert len(set(seeds.values())) == len(data)
    assert sample_seed(5, 4, 0) != seeds[0]


def test_a_sampler_without_seed_and_epoch_gives_plain_indices() -> None:
    indices = seeded_indices([3, 1], SequentialSampler(range(4)))
    assert indices == [3, 1] and all(type(i) is int for i in indices)
