"""Read checkpoints safely and fail with one message: the file, the reason, the fix.

Every read is ``torch.load(weights_only=True)``: a file that needs more than tensors and plain
containers is refused, never unpickled (that could run arbitrary code). ``mmap=True`` keeps the
check cheap: tensors are only mapped, so validating a 500 MB checkpoint before
``trainer.fit/test/predict`` costs milliseconds, and the errors come before anything heavy.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import torch
from torch import nn


class CheckpointLoadError(ValueError):
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


def _resave_example(key: str) -> str:
    if key == "ckpt_path":
        return "e.g. torch.save({'state_dict': ckpt['state_dict']}, new_path) to evaluate it"
    return "an official release: torch.save({'model': ckpt['model']}, new_path)"


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


def read_checkpoint(path: str | os.PathLike, key: str = "ckpt_path") -> Any:
    """``torch.load(path, weights_only=True, mmap=True)`` on CPU; CheckpointLoadError naming
    ``key=path`` when the file is missing, truncated, corrupt or needs unsafe unpickling."""
    path = os.fspath(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise describe_load_error(path, key, err) from err
    except Exception:  # noqa: BLE001 - mmap refuses legacy/non-zip files: retry to classify
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise describe_load_error(path, key, err) from err


def _listing(items: list[str], limit: int = 8) -> str:
    more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + more + "]"


def _run_config_hint(path: str) -> str:
    overrides = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), ".hydra")
    if os.path.isdir(overrides):
        return f" (the training run's config is in {overrides}/config.yaml and overrides.yaml)"
    return ""


def check_lightning_checkpoint(checkpoint: Any, model: nn.Module, path: str) -> None:
    """CheckpointLoadError unless ``checkpoint`` is a Lightning checkpoint whose state dict fits
    ``model`` exactly (what ``trainer.fit/test/predict(ckpt_path=path)`` will load strictly)."""
    where = f"ckpt_path={path}"
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        official = isinstance(checkpoint, dict) and "model" in checkpoint
        hint = (
            " It looks like an official DETR release file: give it as model.pretrained=PATH "
            "(and leave ckpt_path unset)."
            if official
            else ""
        )
        raise CheckpointLoadError(
            f"{where}: not a Lightning checkpoint of this project (no 'state_dict' entry).{hint} "
            "Fix: point ckpt_path at a .ckpt written by detr_lightning.train."
        )
    saved, own = checkpoint["state_dict"], model.state_dict()
    unexpected = sorted(set(saved) - set(own))
    missing = sorted(set(own) - set(saved))
    shapes = [
        f"{k} {tuple(saved[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(saved) & set(own))
        if tuple(saved[k].shape) != tuple(own[k].shape)
    ]
    if not (unexpected or missing or shapes):
        return
    hparams = checkpoint.get("hyper_parameters") or {}
    ours = dict(getattr(model, "hparams", {})).get("num_classes")
    classes = ""
    if hparams.get("num_classes") is not None and ours is not None:
        if int(hparams["num_classes"]) != int(ours):
            classes = (
                f" The checkpoint was trained with {hparams['num_classes']} classes, the data "
                f"configured here has {ours}: use the dataset it was trained on."
            )
    found = [(f"shape mismatches: {_listing(shapes)}" if shapes else ""),
             (f"checkpoint keys the model lacks: {_listing(unexpected)}" if unexpected else ""),
             (f"model keys absent from the checkpoint: {_listing(missing)}" if missing else "")]  # fmt: skip
    raise CheckpointLoadError(
        f"{where}: the checkpoint does not fit the model built from this config "
        f"(another architecture or class count).{classes} Differences: "
        f"{'; '.join(f for f in found if f)}. Fix: compose the same experiment and model "
        f"overrides as the training run{_run_config_hint(path)}."
    )


def checkpoint_summary(checkpoint: Any) -> str:
    """The "epoch E, global step S" of a Lightning checkpoint (for log lines)."""
    if not isinstance(checkpoint, dict):
        return "?"
    return f"epoch {checkpoint.get('epoch', '?')}, global step {checkpoint.get('global_step', '?')}"
