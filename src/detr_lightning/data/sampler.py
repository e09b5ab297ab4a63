"""Aspect-ratio grouped batches: fewer padded pixels per batch (``data.group_by_aspect_ratio``).

A batch is padded to its largest height and largest width, so a landscape and a portrait image
in one batch waste about a third of the canvas. :class:`AspectRatioGroupedBatchSampler` batches
images of the same aspect-ratio group together (by default detectron2's two groups, wider than
tall or not, read from the annotation json's ``width``/``height``), as detectron2's
``AspectRatioGroupedDataset`` and torchvision's ``GroupedBatchSampler`` do.

It wraps an index sampler and keeps its order as far as grouping allows: indices are dealt into
one buffer per group and a buffer is emitted as a batch when it holds ``batch_size`` images.
At the end of the epoch the leftovers (fewer than ``batch_size`` per group) are emitted group
after group in batches of ``batch_size``, so an epoch has exactly ``ceil(n / batch_size)``
batches (``floor`` with ``drop_last``), every index of the sampler appears exactly once, and
at most ``groups - 1`` batches (the tail) mix two groups.

A resumed run can start a pass part-way through the epoch (``start_at``, from
:mod:`detr_lightning.data.resumable_batches`), and, resumed with another batch size or number of
processes, at the images the interrupted run had not reached (``resume_after``: the interrupted
run's grouped batches are replayed to find them, the rest are grouped again at the new size).

DDP: under Lightning the sampler argument is replaced by a ``DistributedSampler`` (this class
subclasses ``BatchSampler`` and names its argument ``sampler``, so Lightning re-instantiates it
per rank, and calls ``set_epoch`` on that sampler). Every rank then gets the same number of
indices and therefore the same number of batches, which DDP needs to stay in step.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from torch.utils.data import BatchSampler, Dataset, Sampler

from detr_lightning.data.resumable_batches import ResumableBatches


def image_sizes(dataset: Dataset) -> np.ndarray:
    """int64 [N, 2] (height, width) of every image of a COCO-format dataset, from its json (no
    image is decoded): ``dataset.image_sizes`` if it has one, else its index's ``sizes``."""
    sizes = getattr(dataset, "image_sizes", None)
    if sizes is None:
        sizes = getattr(getattr(dataset, "_index", None), "sizes", None)
    if sizes is None:
        raise ValueError(
            f"group_by_aspect_ratio: {type(dataset).__name__} exposes no image sizes (an "
            "'image_sizes' [N, 2] (h, w) attribute); set data.group_by_aspect_ratio=false"
        )
    return np.asarray(sizes, dtype=np.int64).reshape(-1, 2)


def aspect_ratio_groups(sizes: np.ndarray, bins: Sequence[float] = (1.0,)) -> list[int]:
    """Group id per image: the number of ``bins`` (sorted width / height ratios) below its ratio.
    The default (1.0,) gives detectron2's two groups: 0 = portrait or square, 1 = landscape."""
    edges = sorted(float(b) for b in bins)
    ratios = sizes[:, 1] / np.maximum(sizes[:, 0], 1)
    return [bisect.bisect_left(edges, float(r)) for r in ratios]


class AspectRatioGroupedBatchSampler(ResumableBatches, BatchSampler):
    """Batches of ``batch_size`` indices from ``sampler`` sharing a group id (module docstring).

    Args:
        sampler: the index order (``RandomSampler`` for training; Lightning substitutes a
            ``DistributedSampler`` under DDP).
        group_ids: group of every dataset index (e.g. :func:`aspect_ratio_groups`).
        batch_size: images per batch.
        drop_last: drop the last incomplete batch (``floor(n / batch_size)`` batches).
    """

    def __init__(
        self,
        sampler: Sampler[int] | Iterable[int],
        group_ids: Sequence[int],
        batch_size: int,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(
                f"AspectRatioGroupedBatchSampler: batch_size={batch_size} must be >= 1"
            )
        self.sampler = sampler
        self.group_ids = [int(g) for g in group_ids]
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)

    grouped = True

    def batches_of(
        self, items: Iterable[int], batch_size: int, index: Callable[[int], int] = int
    ) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = {}
        for item in items:
            buffer = buffers.setdefault(self.group_ids[index(item)], [])
            buffer.append(item)
            if len(buffer) == batch_size:
                yield buffer[:]
                buffer.clear()
        leftovers = [i for g in sorted(buffers) for i in buffers[g]]
        for start in range(0, len(leftovers), batch_size):
            batch = leftovers[start : start + batch_size]
            if len(batch) == batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Forwarded to the wrapped sampler (a ``DistributedSampler`` reshuffles per epoch)."""
        if callable(getattr(self.sampler, "set_epoch", None)):
            self.sampler.set_epoch(epoch)
