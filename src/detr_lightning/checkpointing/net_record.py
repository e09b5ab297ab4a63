"""The architecture a checkpoint was trained with, recorded in it and compared on load.

A checkpoint's tensors fix most of the architecture (a changed ``d_model`` or layer count is
refused by the state-dict check), but not all: the proposal queries' top-k count, attention
sampling points, the box refinement's settings, ... change no tensor shape. ``eval`` or
``predict`` composed with other values ran the trained weights in another model without a
word. The composed ``model.net`` config goes into the checkpoint (``KEY``), and loading warns,
naming each differing key, when this run's differs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from detr_lightning.utils.config_records import differing_keys

log = logging.getLogger(__name__)

KEY = "net_config"
# Where the weights come from, not what the model is: inference sets them off (the checkpoint
# holds the weights), and a path differs from machine to machine.
_WEIGHT_SOURCES = ("pretrained", "weights", "weights_path")


def net_record(model_cfg: DictConfig | None) -> dict[str, Any] | None:
    """``model.net`` of a model config as flat {dotted key: value}, resolved, without the
    weight-source keys (None without a ``net`` node)."""
    node = OmegaConf.select(model_cfg, "net") if model_cfg is not None else None
    if not isinstance(node, DictConfig):
        return None
    return _flat(OmegaConf.to_container(node, resolve=True))


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, Mapping):
        return {prefix: node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _WEIGHT_SOURCES:
            continue
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def warn_if_different(saved: Any, current: dict[str, Any] | None, checkpoint: str) -> list[str]:
    """Log one warning naming every key whose value differs between the checkpoint's record and
    this run's; returns those keys ([] when they agree or either record is missing)."""
    if not isinstance(saved, Mapping) or current is None:
        return []
    changed = differing_keys(saved, current)
    if changed:
        shown = "; ".join(
            f"model.net.{k}: {saved.get(k, '(absent)')!r} -> {current.get(k, '(absent)')!r}"
            for k in changed
        )
        log.warning(
            "%s was trained with another model.net than this run composes (%s). The weights "
            "load, but the model computes otherwise than in training. Fix: give the training "
            "run's model overrides (its .hydra/overrides.yaml), unless the change is intended.",
            checkpoint, shown,
        )  # fmt: skip
    return changed
