"""Checkpoint validation: what is called a checkpoint, and state-dict differences in order."""

from __future__ import annotations

import torch


def test_a_protocol_1_list_pickle_is_not_called_a_non_checkpoint(tmp_path):
    """Docstring: the MARK / EMPTY containers of protocols 0-1 start a pickle; a protocol-1
    pickle of a list (EMPTY_LIST ']') may be a legacy checkpoint, so no 'not a checkpoint'
    error is raised for it."""
    import pickle

    from detr_lightning.checkpointing.validate import _not_a_checkpoint

    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps([1, 2], protocol=1))
    assert path.read_bytes()[:1] == b"]"
    assert _not_a_checkpoint(str(path), "ckpt_path") is None
    (tmp_path / "a.json").write_text('{"a": 1}')
    assert _not_a_checkpoint(str(tmp_path / "a.json"), "ckpt_path") is not None


def test_state_dict_differences_order_is_saved_only_then_own_only():
    """Docstring: '(keys only saved has, keys only own has, shape lines)'."""
    from detr_lightning.checkpointing.validate import state_dict_differences

    saved = {"a": torch.zeros(1), "b": torch.zeros(2)}
    own = {"b": torch.zeros(3), "c": torch.zeros(1)}
    only_saved, only_own, shapes = state_dict_differences(saved, own)
    assert (only_saved, only_own) == (["a"], ["c"])
    assert shapes == ["b (2,) vs model (3,)"]
