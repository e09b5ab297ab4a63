"""The data loaders: making an evaluation iterator leaves the global random stream alone; the
workers of both loaders ignore Ctrl-C (the training process stops after its batch)."""

from __future__ import annotations

import signal

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from detr_lightning.data.loaders import evaluation_loader, training_loader


@pytest.mark.parametrize("workers", [{}, {"num_workers": 1, "persistent_workers": True}],
                         ids=["main-process", "persistent-workers"])  # fmt: skip
def test_making_an_evaluation_iterator_draws_nothing_from_the_global_stream(workers) -> None:
    data = list(range(6))
    torch.manual_seed(3)
    before = torch.get_rng_state()
    batches = [b.tolist() for b in evaluation_loader(data, batch_size=4, **workers)]
    assert batches == [[0, 1, 2, 3], [4, 5]]
    assert torch.equal(torch.get_rng_state(), before)
    # a loader without a generator of its own draws its iterator's seed from the global stream
    iter(DataLoader(data, batch_size=4))
    assert not torch.equal(torch.get_rng_state(), before)


class _SigintIgnored(Dataset):
    """Each item: whether the process reading it ignores SIGINT (1) or not (0)."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> int:
        return int(signal.getsignal(signal.SIGINT) == signal.SIG_IGN)


def test_the_workers_of_both_loaders_ignore_ctrl_c() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # this process's
    loaders = [evaluation_loader(_SigintIgnored(), batch_size=2, num_workers=1),
               training_loader(_SigintIgnored(), 2, grouped=False, seed=0, num_workers=1)]  # fmt: skip
    assert [next(iter(loader)).tolist() for loader in loaders] == [[1, 1], [1, 1]]
    assert next(iter(DataLoader(_SigintIgnored(), batch_size=2))).tolist() == [0, 0]
