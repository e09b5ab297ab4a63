"""Each training sample's random draws (the augmentation) as a function of the run's seed, the
epoch and the image, not of the process that loads it.

Without this, the augmentation drew from the loading process's generators: the main process's
stream (shared with dropout) with ``data.num_workers=0``, else each worker's, seeded per epoch
and worker. So the same run with another number of workers trained on other crops, and a resumed
run's draws differed wherever the workers' generators could not be put back: a mid-epoch resume
(a worker's generator had drawn for the batches it loaded before the stop) and persistent
workers (``data.persistent_workers=true``, the COCO presets), whose generators no checkpoint
holds.

The training batch samplers (``data/resumable_batches.py``) hand out :class:`SeededIndex` values:
dataset indices (plain ``int`` subclasses, so any dataset can be indexed by them) that carry
:func:`sample_seed` ``(seed, epoch, index)``, the seed and epoch read from their index sampler
(:class:`~detr_lightning.data.epoch_sampler.EpochRandomSampler`, or under DDP Lightning's
``DistributedSampler``, which both have them). :class:`SeededSamples`, the training loader's
dataset, loads such an index with the torch, numpy and Python generators seeded from it, and puts
the process's own states back afterwards, so the model's draws (dropout, denoising noise) do not
depend on the data either. An image's augmentation in an epoch is then the same with any number
of workers, persistent or not, on any DDP rank, and after any resume. A plain ``int`` (an index
sampler without ``seed`` and ``epoch``, e.g. the sequential one Lightning puts in for
``trainer.overfit_batches``) is loaded from the process's streams, as before.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from detr_lightning.checkpointing.rng_states import derive_seed


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of dataset index ``index``'s draws in epoch ``epoch`` of a run seeded ``seed``."""
    return derive_seed(int(seed) % 2**64, int(epoch), int(index))


class SeededIndex(int):
    """A dataset index (its ``int`` value) with the seed of that sample's draws (``seed``)."""

    seed: int

    def __new__(cls, index: int, seed: int) -> SeededIndex:
        out = super().__new__(cls, index)
        out.seed = int(seed)
        return out

    def __getnewargs__(self) -> tuple[int, int]:  # pickled to worker processes with its seed
        return int(self), self.seed

    def __repr__(self) -> str:
        return f"SeededIndex({int(self)}, seed={self.seed})"


def seeded_indices(indices: Sequence[int], sampler: Sampler) -> list[int]:
    """``indices`` as :class:`SeededIndex` values of ``sampler``'s ``seed`` and ``epoch``; as
    they are when the sampler has no integer ``seed`` and ``epoch``."""
    seed, epoch = getattr(sampler, "seed", None), getattr(sampler, "epoch", None)
    if not (isinstance(seed, int) and isinstance(epoch, int)):
        return list(indices)
    return [SeededIndex(i, sample_seed(seed, epoch, i)) for i in indices]


@contextmanager
def drawing_from(seed: int) -> Iterator[None]:
    """Inside: the torch (CPU), numpy and Python generators seeded from ``seed``; after: the
    states they had before. CUDA's generators are neither used by the transforms nor touched."""
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class SeededSamples(Dataset):
    """``dataset`` whose item for a :class:`SeededIndex` is drawn from that index's seed
    (:func:`drawing_from`); a plain index is loaded as ``dataset`` loads it.

    Args:
        dataset: the map-style training dataset (kept as ``.dataset``).
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> Any:
        seed = getattr(index, "seed", None)
        if seed is None:
            return self.dataset[index]
        with drawing_from(seed):
            return self.dataset[int(index)]
