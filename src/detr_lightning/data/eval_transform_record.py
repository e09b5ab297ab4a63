"""The evaluation transform a checkpoint (or an exported .onnx) was made with, recorded in it and
compared on load.

A checkpoint holds the weights, not the image size the detector was evaluated at: ``eval`` or
``predict`` composed with another ``data`` group (the shapes data's 160 px for a model trained at
800 px) ran at that size without a word. The composed ``data.val_transforms`` config goes into
the datamodule's checkpoint state (``KEY``), and loading warns when this run's differs.
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig, OmegaConf

from detr_lightning.utils.config_records import differing_keys, shown

log = logging.getLogger(__name__)

KEY = "val_transforms"


def transform_record(data_cfg: DictConfig | None) -> dict[str, Any] | None:
    """The plain, resolved ``data.val_transforms`` node of a data config (None without one)."""
    node = OmegaConf.select(data_cfg, "val_transforms") if data_cfg is not None else None
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else None


def warn_if_different(saved: Any, current: dict[str, Any] | None, checkpoint: str) -> bool:
    """Log a warning naming both settings when the checkpoint's recorded transform differs from
    this run's; True if it did. Nothing to compare (an older checkpoint, no data config): False."""
    if not isinstance(saved, dict) or current is None or saved == current:
        return False
    changed = differing_keys(saved, current)
    log.warning(
        "%s records data.val_transforms %s (its evaluation's); this run uses %s (%s differ): images are "
        "resized otherwise than in its evaluation, and boxes and AP change. Fix: give the "
        "training run's data overrides (its .hydra/overrides.yaml), unless the other size is "
        "what you want.",
        checkpoint, shown(saved, changed), shown(current, changed), ", ".join(changed),
    )  # fmt: skip
    return True
