"""The random generators' states in checkpoints: captured, saved (weights_only), put back when the
resumed run's first training epoch starts."""

from __future__ import annotations

import random

import numpy as np
import torch

from detr_lightning.checkpointing.rng_states import RngStates, capture, restore


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
    callback.on_train_epoch_start(None, None)  # a fresh run: nothing to restore
    torch.manual_seed(4)
    saved = callback.state_dict()
    expected = torch.rand(2).tolist()
    callback.load_state_dict(saved)
    torch.manual_seed(0)
    torch.rand(5)  # what building the trainer and a sanity check draw
    callback.on_train_epoch_start(None, None)
    assert torch.rand(2).tolist() == expected
    callback.on_train_epoch_start(None, None)  # the next epoch goes on, not back
    assert torch.rand(2).tolist() != expected
