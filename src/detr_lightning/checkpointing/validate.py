"""Check that a loaded checkpoint is one this project can resume, evaluate or predict from, before
the model or the trainer is built: the Lightning entries it must hold and a state dict that fits
the configured model exactly. Reading the file safely is :mod:`.read`'s job.
"""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from detr_lightning.checkpointing.read import RESAVE_EXAMPLE, CheckpointLoadError

# In detr/ so that the official loader shares them (detr/ imports nothing from here).
from detr_lightning.detr.state_dicts import listing, state_dict_differences

# What ``trainer.fit/test/predict(ckpt_path=...)`` and ``predict`` read from a .ckpt besides the
# weights: Lightning's version (its checkpoint migration) and the hyper-parameters (class count
# and label map). A file re-saved with fewer entries fails deep in Lightning otherwise.
LIGHTNING_KEYS = ("state_dict", "hyper_parameters", "pytorch-lightning_version")


def _run_config_hint(path: str) -> str:
    overrides = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(path))), ".hydra")
    if os.path.isdir(overrides):
        return f" (the training run's config is in {overrides}/config.yaml and overrides.yaml)"
    return ""


def check_lightning_entries(checkpoint: Any, path: str) -> None:
    """CheckpointLoadError unless ``checkpoint`` holds what a Lightning checkpoint of this
    project must (:data:`LIGHTNING_KEYS`); cheap, so it runs before the model is built."""
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
    absent = [k for k in LIGHTNING_KEYS if k not in checkpoint]
    if absent:
        raise CheckpointLoadError(
            f"{where}: a Lightning checkpoint lacks {', '.join(repr(k) for k in absent)} (it "
            "was probably re-saved with its weights only): Lightning needs its version entry "
            "to load the file, predict the class count and label map of the hyper-parameters. "
            "Fix: use the run's original "
            f".ckpt, or re-save every entry of it that you need, e.g. {RESAVE_EXAMPLE}."
        )


def check_lightning_checkpoint(checkpoint: Any, model: nn.Module, path: str) -> None:
    """CheckpointLoadError unless ``checkpoint`` is a Lightning checkpoint whose state dict fits
    ``model`` exactly (what ``trainer.fit/test/predict(ckpt_path=path)`` will load strictly)."""
    check_lightning_entries(checkpoint, path)
    where = f"ckpt_path={path}"
    saved, own = checkpoint["state_dict"], model.state_dict()
    unexpected, missing, shapes = state_dict_differences(saved, own)
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
    found = [(f"shape mismatches: {listing(shapes)}" if shapes else ""),
             (f"checkpoint keys the model lacks: {listing(unexpected)}" if unexpected else ""),
             (f"model keys absent from the checkpoint: {listing(missing)}" if missing else "")]  # fmt: skip
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
