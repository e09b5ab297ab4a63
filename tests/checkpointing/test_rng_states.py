"""The random generators' states in checkpoints: captured, saved (weights_only), put back when the
resumed run's first training epoch starts."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import torch

from detr_lightning.checkpointing.rng_states import (
    RngStates,
    capture,
    restore,
    separate_rank_streams,
)

RANK0 = SimpleNamespace(global_rank=0)  # what the callback reads of the trainer


def draws() -> tuple[list[float], list[float], list[float]]:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_states_survive_a_weights_only_checkpoint_and_give_the_same_numbers(tmp_path) -> None:
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    draws()
    torch.save({"callbacks": {"RngStates": capture()}}, tmp_path / "a.ckpt")
    expected = draws()
    torch.manual_seed(9), np.random.seed(9), random.seed(9)  # a resumed process re-seeds
    assert draws() != expected
    restore(torch.load(tmp_path / "a.ckpt", weights_only=True)["callbacks"]["RngStates"])
    assert draws() == expected


def test_the_callback_restores_once_at_the_first_epoch_start_of_a_resume() -> None:
    callback = RngStates()
    callback.on_train_epoch_start(RANK0, None)  # a fresh run: nothing to restore
    torch.manual_seed(4)
    saved = callback.state_dict()
    expected = torch.rand(2).tolist()
    callback.load_state_dict(saved)
    torch.manual_seed(0)
    torch.rand(5)  # what building the trainer and a sanity check draw
    callback.on_train_epoch_start(RANK0, None)
    assert torch.rand(2).tolist() == expected
    callback.on_train_epoch_start(RANK0, None)  # the next epoch goes on, not back
    assert torch.rand(2).tolist() != expected


def _after(seed: int, rank: int) -> tuple[list[float], list[float], list[float]]:
    torch.manual_seed(seed), np.random.seed(seed), random.seed(seed)
    separate_rank_streams(rank)
    return draws()


def test_each_ddp_rank_gets_its_own_streams_and_rank_0_keeps_the_runs() -> None:
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    shared = draws()
    assert _after(5, 0) == shared  # rank 0: untouched
    ranks = [_after(5, r) for r in (1, 2, 3)]
    for r, streams in enumerate(ranks, start=1):
        # every generator differs from rank 0's and from the other ranks'
        assert all(mine != theirs for mine, theirs in zip(streams, shared, strict=True)), r
        assert all(streams[g] != ranks[r % 3][g] for g in range(3)), r
    assert _after(5, 2) == ranks[1]  # a function of the shared state and the rank
    assert _after(6, 2) != ranks[1]


def test_the_callback_separates_the_ranks_when_fitting_starts_and_after_a_restore() -> None:
    callback = RngStates()
    torch.manual_seed(4)
    callback.setup(SimpleNamespace(global_rank=1), None, "validate")  # not fitting: untouched
    assert torch.rand(2).tolist() == _after(4, 0)[0][:2]
    torch.manual_seed(4)
    callback.setup(SimpleNamespace(global_rank=1), None, "fit")
    assert torch.rand(3).tolist() == _after(4, 1)[0]
    # a resume on rank 1: rank 0's saved state, then rank 1's own streams from it
    torch.manual_seed(8)
    callback.load_state_dict(capture())
    torch.manual_seed(0)
    callback.on_train_epoch_start(SimpleNamespace(global_rank=1), None)
    assert torch.rand(3).tolist() == _after(8, 1)[0]
