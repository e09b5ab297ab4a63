"""Reading checkpoints: what is called a checkpoint; a damaged one (its zip headers included:
a flipped byte in a member's name or compression method) is refused by name."""

from __future__ import annotations

import struct
import zipfile

import pytest
import torch

from detr_lightning.checkpointing.read import CheckpointLoadError, read_checkpoint


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


def _good(tmp_path):
    path = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.arange(4096.0)}, "epoch": 1}, path)
    return path, bytearray(path.read_bytes())


def test_a_flipped_byte_in_a_member_name_is_named(tmp_path) -> None:
    path, data = _good(tmp_path)
    name_len = struct.unpack("<H", data[26:28])[0]
    assert name_len > 10
    data[30 + 10] ^= 0xFF  # a byte of the first local header's file name: not valid UTF-8
    bad = tmp_path / "name.ckpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointLoadError) as err:
        read_checkpoint(bad)
    assert f"ckpt_path={bad}" in str(err.value)


def test_a_flipped_byte_in_a_compression_method_is_named(tmp_path) -> None:
    path, data = _good(tmp_path)
    with zipfile.ZipFile(path) as z:
        first = z.infolist()[0]
    eocd = bytes(data).rfind(b"PK\x05\x06")
    cd_start = struct.unpack("<I", data[eocd + 16 : eocd + 20])[0]
    assert data[cd_start : cd_start + 4] == b"PK\x01\x02"
    data[cd_start + 10] = 0x63  # the central directory's compression method of the 1st member
    bad = tmp_path / "method.ckpt"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointLoadError) as err:
        read_checkpoint(bad)
    assert f"ckpt_path={bad}" in str(err.value), first.filename
