"""Reading checkpoints: what is called a checkpoint."""

from __future__ import annotations


def test_a_protocol_1_list_pickle_is_not_called_a_non_checkpoint(tmp_path):
    """Docstring: the MARK / EMPTY containers of protocols 0-1 start a pickle; a protocol-1
    pickle of a list (EMPTY_LIST ']') may be a legacy checkpoint, so no 'not a checkpoint'
    error is raised for it."""
    import pickle

    from detr_lightning.checkpointing.read import _not_a_checkpoint

    path = tmp_path / "legacy.pth"
    path.write_bytes(pickle.dumps([1, 2], protocol=1))
    assert path.read_bytes()[:1] == b"]"
    assert _not_a_checkpoint(str(path), "ckpt_path") is None
    (tmp_path / "a.json").write_text('{"a": 1}')
    assert _not_a_checkpoint(str(tmp_path / "a.json"), "ckpt_path") is not None
