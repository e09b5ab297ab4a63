"""Which generator states a resumed DDP rank puts back: its own from a checkpoint of as many
ranks, else rank 0's (old single-state checkpoints, mid-epoch ones, another world size), with a
logged line on rank 0."""

from __future__ import annotations

import logging

import torch

from detr_lightning.checkpointing.rng_ranks import RANKS, gather, states_for_rank
from detr_lightning.checkpointing.rng_states import capture

LOGGER = "detr_lightning.checkpointing.rng_ranks"


def _states(seed: int) -> dict:
    torch.manual_seed(seed)
    return capture()


def _saved(world_size: int) -> dict:
    ranks = [_states(10 + r) for r in range(world_size)]
    return {**ranks[0], RANKS: ranks}


def test_each_rank_gets_its_own_states_from_a_checkpoint_of_as_many_ranks(caplog) -> None:
    saved = _saved(2)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for rank in (0, 1):
            states, own = states_for_rank(saved, rank, 2)
            assert own and torch.equal(states["torch"], saved[RANKS][rank]["torch"])
    assert caplog.records == []


def test_an_old_single_state_checkpoint_gives_rank_0s_states_to_every_rank(caplog) -> None:
    saved = _states(3)  # what every checkpoint held before per-rank states
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert states_for_rank(saved, 1, 2) == (saved, False)  # rank 1 derives from them
        assert caplog.records == []  # rank 1 says nothing: rank 0 speaks for the run
        assert states_for_rank(saved, 0, 2) == (saved, True)
    (record,) = caplog.records
    assert record.levelno == logging.INFO and "rank 0's random generator states only" in (
        record.getMessage()
    )
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert states_for_rank(saved, 0, 1) == (saved, True)  # one process: as always, silent
    assert caplog.records == []


def test_another_world_size_falls_back_to_rank_0s_states_with_a_warning(caplog) -> None:
    saved = _saved(2)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for rank in (1, 2):
            assert states_for_rank(saved, rank, 3) == (saved, False)
        assert states_for_rank(saved, 0, 3) == (saved, True)
    (record,) = caplog.records
    assert record.levelno == logging.WARNING
    assert "states of 2 DDP ranks, this run has 3" in record.getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):  # a one-process resume: rank 0's
        assert states_for_rank(saved, 0, 1) == (saved, True)
    (record,) = caplog.records
    assert record.levelno == logging.INFO and "continues rank 0's" in record.getMessage()


def test_without_a_process_group_the_gather_is_this_process_alone() -> None:
    states = _states(4)
    assert gather(states, 1) == [states]
    assert gather(states, 2) == [states]  # no process group (a unit test): no collective
