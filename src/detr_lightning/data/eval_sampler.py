"""Evaluation under DDP in the single-process batches: each rank gets whole batches.

A batch is padded to its largest image, and the padding reaches the backbone's convolutions (as
in the official code), so an image's detections depend on the images it is batched with.
Lightning's ``DistributedSampler`` deals the images out to the ranks in turn, so at
``val_batch_size`` > 1 every rank batches other images together than a single process does, and
the AP moves slightly. :class:`WholeBatchDistributedSampler` cuts the evaluation order into the
single-process batches first (``0..B-1``, ``B..2B-1``, ...; the last may be short) and deals
those out instead: rank ``r`` gets batches ``r, r + W, r + 2W, ...``. Every rank gets the same
number of batches (DDP's collectives need that): the batch list is padded by repeating its first
batches, which the evaluation drops by ``image_id`` after gathering, as it does for Lightning's
padded repeats. The repeats and the short last batch all fall in the last round of the dealing,
one batch per rank, so a rank's last batch is its only one that can be short, and a
``DataLoader`` with ``batch_size=B`` cuts the rank's indices into exactly the batches above.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from torch.utils.data import Dataset, DistributedSampler


class WholeBatchDistributedSampler(DistributedSampler):
    """Indices of rank ``rank``'s whole single-process batches, in order (module docstring).

    A ``DistributedSampler``, so that Lightning keeps it rather than substituting its own; no
    shuffling. Args: ``dataset``, ``batch_size`` (the evaluation batch size the ``DataLoader``
    uses), ``num_replicas`` / ``rank`` (default: the process group's).
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: need >= 1")
        self.batch_size = batch_size
        n = len(dataset)  # type: ignore[arg-type]
        batches = [list(range(s, min(s + batch_size, n))) for s in range(0, n, batch_size)]
        per_rank = math.ceil(len(batches) / self.num_replicas)
        padded = [batches[i % len(batches)] for i in range(per_rank * self.num_replicas)]
        mine = padded[self.rank :: self.num_replicas]
        self.indices = [i for batch in mine for i in batch]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
