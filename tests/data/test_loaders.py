"""The data loaders: making an evaluation iterator leaves the global random stream alone."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from detr_lightning.data.loaders import evaluation_loader


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
