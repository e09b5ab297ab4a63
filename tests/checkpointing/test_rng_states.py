"""The random generators' states in checkpoints: captured, saved (weights_only), put back when the
resumed run's first training epoch starts."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from detr_lightning.checkpointing import rng_states
from detr_lightning.checkpointing.rng_ranks import RANKS
from detr_lightning.checkpointing.rng_states import (
    RngStates,
    capture,
    restore,
    separate_rank_streams,
)

RANK0 = SimpleNamespace(global_rank=0, world_size=1)  # what the callback reads of the trainer


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
    callback.on_train_epoch_start(SimpleNamespace(global_rank=1, world_size=2), None)
    assert torch.rand(3).tolist() == _after(8, 1)[0]


def _two_ranks(monkeypatch, rank1_seed: int) -> tuple[RngStates, list[float]]:
    """Rank 0's callback at an epoch end of a 2-process run whose rank 1 is at ``rank1_seed``
    (the gather stubbed); also what rank 1 draws next."""
    torch.manual_seed(rank1_seed), np.random.seed(rank1_seed), random.seed(rank1_seed)
    rank1 = capture()
    rank1_next = torch.rand(3).tolist()
    monkeypatch.setattr(rng_states, "gather", lambda states, world_size: [states, rank1])
    callback = RngStates()
    callback.setup(SimpleNamespace(global_rank=0), None, "validate")
    torch.manual_seed(6), np.random.seed(6), random.seed(6)
    callback.on_train_epoch_end(SimpleNamespace(world_size=2, callback_metrics={}), None)
    return callback, rank1_next


def test_an_epoch_end_checkpoint_holds_every_ranks_states_and_rank_1_continues_its_own(
    monkeypatch, tmp_path
) -> None:
    callback, rank1_next = _two_ranks(monkeypatch, rank1_seed=11)
    torch.save({"callbacks": {"RngStates": callback.state_dict()}}, tmp_path / "a.ckpt")
    saved = torch.load(tmp_path / "a.ckpt", weights_only=True)["callbacks"]["RngStates"]
    assert len(saved[RANKS]) == 2
    rank0_next = torch.rand(3).tolist()
    for rank, expected in ((1, rank1_next), (0, rank0_next)):
        resumed = RngStates()
        resumed.load_state_dict(saved)
        torch.manual_seed(0)  # a resumed process re-seeds, rank 1 then separates its streams
        separate_rank_streams(rank)
        resumed.on_train_epoch_start(SimpleNamespace(global_rank=rank, world_size=2), None)
        assert torch.rand(3).tolist() == expected, rank


def test_a_checkpoint_after_the_epoch_end_or_after_a_draw_holds_rank_0s_states_only(
    monkeypatch, caplog
) -> None:
    callback, _ = _two_ranks(monkeypatch, rank1_seed=11)
    assert RANKS in callback.state_dict()  # the epoch-end save, moments later
    callback.on_train_batch_start(RANK0, None, None, 0)  # the next epoch: mid-epoch saves
    assert RANKS not in callback.state_dict()
    callback, _ = _two_ranks(monkeypatch, rank1_seed=11)
    torch.rand(1)  # something drew between the exchange and the save
    assert RANKS not in callback.state_dict()
    assert "moved between the ranks' exchange" in caplog.text


def test_a_one_process_run_exchanges_nothing(monkeypatch) -> None:
    monkeypatch.setattr(rng_states, "gather", lambda *args: 1 / 0)
    callback = RngStates()
    callback.on_train_epoch_end(SimpleNamespace(world_size=1), None)
    assert RANKS not in callback.state_dict()


@pytest.mark.parametrize(
    ("writes", "sigterm", "last_batch", "exchanged"),
    [(False, False, False, False), (True, False, False, True),  # every n steps
     (False, True, False, True),  # the ranks stop on a SIGTERM at this batch's end
     (False, True, True, False)],  # at an epoch's last batch Lightning stops later
)  # fmt: skip
def test_the_ranks_states_are_exchanged_at_the_batch_ends_that_save(
    monkeypatch, writes: bool, sigterm: bool, last_batch: bool, exchanged: bool
) -> None:
    rank1 = {"torch": torch.zeros(1)}
    monkeypatch.setattr(rng_states, "gather", lambda states, world_size: [states, rank1])
    callback = RngStates()
    callback.setup(SimpleNamespace(global_rank=0), None, "validate")
    checkpoint = SimpleNamespace(writes_last_after_batch=lambda trainer: writes)
    progress = SimpleNamespace(batch_progress=SimpleNamespace(is_last_batch=last_batch))
    trainer = SimpleNamespace(
        world_size=2, checkpoint_callbacks=[checkpoint], received_sigterm=sigterm,
        fit_loop=SimpleNamespace(epoch_loop=progress),
    )  # fmt: skip
    callback.on_train_batch_start(trainer, None, None, 0)
    callback.on_train_batch_end(trainer, None, None, None, 0)
    saved = callback.state_dict()
    assert (RANKS in saved) is exchanged
    if exchanged:
        assert saved[RANKS][1] is rank1


@pytest.mark.parametrize(
    ("sigterm", "sanity", "exchanged_before", "exchanged"),
    [(False, False, False, False),
     (True, False, False, True),  # the ranks stop in this validation: its checkpoint follows
     (True, True, False, False),  # the sanity check saves nothing
     (True, False, True, False)],  # exchanged at the training batch end already: not again
)  # fmt: skip
def test_the_ranks_states_are_exchanged_once_when_they_stop_in_validation(
    monkeypatch, sigterm: bool, sanity: bool, exchanged_before: bool, exchanged: bool
) -> None:
    calls = []

    def fake_gather(states, world_size):
        calls.append(world_size)
        return [states, {"torch": torch.zeros(1)}]

    monkeypatch.setattr(rng_states, "gather", fake_gather)
    callback = RngStates()
    callback.setup(SimpleNamespace(global_rank=0), None, "validate")
    if exchanged_before:
        callback._ranks = fake_gather(rng_states.capture(), 2)
        calls.clear()
    trainer = SimpleNamespace(world_size=2, received_sigterm=sigterm, sanity_checking=sanity)
    callback.on_validation_batch_end(trainer, None, None, None, 0)
    callback.on_validation_batch_end(trainer, None, None, None, 1)  # the stop is at the first
    assert calls == ([2] if exchanged else [])
    assert (RANKS in callback.state_dict()) is (exchanged or exchanged_before)


def test_a_mid_epoch_resume_restores_when_training_starts() -> None:
    """Lightning gives a resumed part-epoch no epoch start: the states go back in on_train_start
    (before its next batch) for a mid-epoch checkpoint only; an epoch-end one waits for the
    epoch start."""
    callback = RngStates()
    torch.manual_seed(4)
    saved = callback.state_dict()
    expected = torch.rand(2).tolist()
    for mid_epoch in (True, False):
        callback.load_state_dict(saved)
        torch.manual_seed(0)
        trainer = SimpleNamespace(global_rank=0, world_size=1,
                                  fit_loop=SimpleNamespace(restarted_mid_epoch=mid_epoch))  # fmt: skip
        callback.on_train_start(trainer, None)
        assert (torch.rand(2).tolist() == expected) is mid_epoch
    callback.on_train_epoch_start(trainer, None)  # the epoch-end checkpoint's turn
    assert torch.rand(2).tolist() == expected
