"""Checkpoint validation: state-dict differences in order."""

from __future__ import annotations

import torch


def test_state_dict_differences_order_is_saved_only_then_own_only():
    """Docstring: '(keys only saved has, keys only own has, shape lines)'."""
    from detr_lightning.detr.state_dicts import state_dict_differences

    saved = {"a": torch.zeros(1), "b": torch.zeros(2)}
    own = {"b": torch.zeros(3), "c": torch.zeros(1)}
    only_saved, only_own, shapes = state_dict_differences(saved, own)
    assert (only_saved, only_own) == (["a"], ["c"])
    assert shapes == ["b (2,) vs model (3,)"]
