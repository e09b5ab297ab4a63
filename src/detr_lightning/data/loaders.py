"""The data loaders of a :class:`~detr_lightning.data.datamodule.DetrDataModule`: training in an
order that is a function of the seed and the epoch (optionally in aspect-ratio groups),
evaluation in whole batches per DDP rank."""

from __future__ import annotations

import signal
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from detr_lightning.data.epoch_sampler import EpochRandomSampler
from detr_lightning.data.eval_sampler import WholeBatchDistributedSampler
from detr_lightning.data.resumable_batches import ResumableBatchSampler
from detr_lightning.data.sample_seeds import SeededSamples
from detr_lightning.data.sampler import (
    AspectRatioGroupedBatchSampler,
    aspect_ratio_groups,
    image_sizes,
)


def training_loader(
    dataset: Dataset, batch_size: int, grouped: bool, seed: int, **worker_kwargs: Any
) -> DataLoader:
    """Each image once per epoch (:class:`EpochRandomSampler` seeded with the run's ``seed``);
    with ``grouped``, batches of one aspect-ratio group (:mod:`detr_lightning.data.sampler`).
    Either batch sampler can start a resumed epoch where it was interrupted
    (:mod:`detr_lightning.data.resumable_batches`), and each sample's augmentation is drawn from
    ``(seed, epoch, index)`` (:mod:`detr_lightning.data.sample_seeds`; the loader's dataset is
    ``SeededSamples(dataset)``).
    ``worker_kwargs``: num_workers, pin_memory, persistent_workers, collate_fn."""
    order = EpochRandomSampler(dataset, seed)
    if grouped:
        batches = AspectRatioGroupedBatchSampler(order, aspect_ratio_groups(image_sizes(dataset)),
                                                 batch_size)  # fmt: skip
    else:
        batches = ResumableBatchSampler(order, batch_size, drop_last=False)
    return DataLoader(SeededSamples(dataset), batch_sampler=batches, generator=_worker_seeds(seed),
                      worker_init_fn=ignore_ctrl_c, **worker_kwargs)  # fmt: skip


def evaluation_loader(dataset: Dataset, batch_size: int, **worker_kwargs: Any) -> DataLoader:
    """In dataset order; under DDP each rank gets whole batches (no image twice in the AP).

    The loader has a generator of its own (evaluation draws nothing from it): each iterator
    draws its workers' base seed when made, and with persistent workers a run makes one
    iterator, at its first validation. A resumed run makes it again after the restore, where
    the uninterrupted run made none: from the global stream, that draw would shift the dropout
    of every later epoch."""
    sampler = None
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        sampler = WholeBatchDistributedSampler(dataset, batch_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=False,
                      generator=torch.Generator().manual_seed(0), worker_init_fn=ignore_ctrl_c,
                      **worker_kwargs)  # fmt: skip


def _worker_seeds(seed: int) -> torch.Generator:
    """The training loader's own generator: every epoch's iterator draws its workers' seed from
    it, not from the global random state, so that the model's random numbers (dropout, noise)
    do not depend on how many iterators were made before (a resumed run makes its first one
    earlier than an uninterrupted one: checkpointing/rng_states.py). It is re-seeded with
    (seed, epoch) at every epoch start (data/epoch_streams.py). The samples' augmentation does
    not use the workers' seeds (data/sample_seeds.py); draws outside a sample's load (a
    collate function's) do."""
    return torch.Generator().manual_seed(seed)


def ignore_ctrl_c(worker_id: int) -> None:
    """A data worker's start: ignore SIGINT. A terminal's Ctrl-C reaches every process of its
    group; the training process stops after the batch it is in
    (``checkpointing/sigterm_agreement.py``), and a worker ended by the signal would leave that
    stop without the batches it still reads."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
