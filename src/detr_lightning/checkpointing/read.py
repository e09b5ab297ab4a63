"""Read checkpoints safely and fail with one message: the file, the reason, the fix.

Every read is ``torch.load(weights_only=True)``: a file that needs more than tensors and plain
containers is refused, never unpickled (that could run arbitrary code). ``mmap=True`` keeps the
load cheap: tensors are only mapped. Before it, the zip archive's CRC-32s are checked (one
sequential read of the file), since torch.load does not check them and damaged tensor bytes would
load as wrong weights. The errors come before anything heavy.
"""

from __future__ import annotations

import os
import pickle
import zipfile
import zlib
from typing import Any

import torch

from detr_lightning.errors import ExplainedError


class CheckpointLoadError(ExplainedError, ValueError):
    """A checkpoint cannot be used; the message names the file, the reason and the fix."""


def _torch_reason(err: BaseException) -> str:
    """The informative first sentence of torch's (long) error text."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    line = next((ln for ln in lines if "GLOBAL" in ln), lines[0] if lines else "")
    # Torch goes on with advice (allowlisting globals, weights_only=False) that is unsafe here.
    first = line.split(". ")[0].rstrip(".")
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _fix_for(key: str) -> str:
    if key == "ckpt_path":
        return (
            "resume or evaluate from another checkpoint of the run (its checkpoints/ folder), "
            "or ckpt_path=last for the newest last.ckpt of the experiment"
        )
    return "download or copy the file again (compare its size with the original)"


# How to re-save a Lightning .ckpt with the entries this project reads (validate.py's list).
RESAVE_EXAMPLE = (
    "torch.save({k: ckpt[k] for k in ('state_dict', 'hyper_parameters', "
    "'pytorch-lightning_version', 'label_to_category_id') if k in ckpt}, new_path)"
)


def _resave_example(key: str) -> str:
    if key == "ckpt_path":
        return f"a Lightning .ckpt, to evaluate or predict with it: {RESAVE_EXAMPLE}"
    return "an official release: torch.save({'model': ckpt['model']}, new_path)"


def _pickle_opcode(head: bytes) -> bool:
    """Whether ``head`` starts like a pickle (torch's legacy format): PROTO, or the MARK / EMPTY
    containers of protocols 0-1."""
    return bool(head) and (head[:1] == b"\x80" or head[:1] in b"(}]")


def _file_head(path: str, size: int = 16) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def _not_a_checkpoint(path: str, key: str) -> CheckpointLoadError | None:
    """A named error when ``path`` is neither a zip (torch.save's format) nor a pickle (the
    legacy one): a json, text or image file given by mistake. None when it may be a checkpoint
    (an empty file is reported as truncated)."""
    try:
        head = _file_head(path)
    except OSError:
        return None
    if not head or zipfile.is_zipfile(path) or _pickle_opcode(head) or head[:2] == b"PK":
        return None  # "PK" without a readable directory: a cut-short zip (truncated)
    kind = (
        "a Lightning .ckpt written by detr_lightning.train (checkpoints/last.ckpt)"
        if key == "ckpt_path"
        else "an official DETR release .pth"
    )
    return CheckpointLoadError(
        f"{key}={path}: not a PyTorch checkpoint (it starts with {head!r}; torch.save writes "
        f"a zip archive, older versions a pickle). Fix: point {key} at {kind}."
    )


def describe_load_error(path: str, key: str, err: BaseException) -> CheckpointLoadError:
    """Map an exception of ``torch.load(path, weights_only=True)`` to a named, fixable error."""
    size = os.path.getsize(path) if os.path.isfile(path) else None
    where = f"{key}={path}"
    if isinstance(err, (FileNotFoundError, IsADirectoryError)) or size is None:
        return CheckpointLoadError(
            f"{where}: no such file. Fix: check the path (relative paths start at the launch "
            f"directory){', or use ckpt_path=last' if key == 'ckpt_path' else ''}."
        )
    if isinstance(err, PermissionError):
        return CheckpointLoadError(f"{where}: not readable ({err}). Fix: check its permissions.")
    foreign = _not_a_checkpoint(path, key)
    if foreign is not None:
        return foreign
    if isinstance(err, pickle.UnpicklingError) and "weights only" in str(err).lower():
        return CheckpointLoadError(
            f"{where}: refused: loading it needs unsafe unpickling ({_torch_reason(err)}). Only "
            "tensors and plain containers are loaded (weights_only=True); a file that needs more "
            "can run arbitrary code when opened. Fix: get a clean copy; only if you made the file "
            "yourself and trust it, load it once in Python with weights_only=False and torch.save "
            f"just its tensors/plain values ({_resave_example(key)})."
        )
    return CheckpointLoadError(
        f"{where}: the file is truncated or corrupt ({size} bytes; {_torch_reason(err)}). It was "
        "probably cut short by a crash, a full disk or an interrupted copy. "
        f"Fix: {_fix_for(key)}."
    )


# what zipfile raises for damaged structure: a header, a member's name that is not UTF-8 (a
# flipped byte), an unknown compression method, a cut or inflating member
_DAMAGED_ZIP = (zipfile.BadZipFile, EOFError, zlib.error, UnicodeDecodeError, NotImplementedError)


def check_archive(path: str, key: str = "ckpt_path") -> None:
    """CheckpointLoadError when a checkpoint's zip archive fails its CRC check: torch.load never
    checks them, so damaged tensor bytes (bad disk, broken copy) would load as wrong weights.
    A file that is no zip, or one cut short, is left to torch.load, whose error is classified."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # one sequential read of every member
    except OSError:
        return  # unreadable: torch.load's error names it
    except _DAMAGED_ZIP as err:
        reason = f"its zip structure is damaged ({type(err).__name__}: {err})"
    else:
        if bad is None:
            return
        reason = f"the bytes of its member '{bad}' do not match the CRC-32 stored for them"
    raise CheckpointLoadError(
        f"{key}={path}: the file is corrupt: {reason}. Loading it would give silently wrong "
        "values; it was probably damaged on disk or in a copy. Fix: copy or download it again "
        f"from an intact source, or {_fix_for(key)}."
    )


def read_checkpoint(path: str | os.PathLike, key: str = "ckpt_path") -> Any:
    """``torch.load(path, weights_only=True, mmap=True)`` on CPU; CheckpointLoadError naming
    ``key=path`` when the file is missing, truncated, corrupt or needs unsafe unpickling."""
    path = os.fspath(path)
    check_archive(path, key)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise describe_load_error(path, key, err) from None  # the message carries the reason
    except Exception:  # noqa: BLE001 - mmap refuses legacy/non-zip files: retry to classify
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise describe_load_error(path, key, err) from None  # the message carries the reason
