"""Resuming restores the optimiser and the lr schedule from the checkpoint: refuse overrides of
them that the resumed run would silently ignore.

Lightning reloads the optimiser's state (its lrs included) and the scheduler's (a budget
schedule's minutes and shares included) from ``ckpt_path``, so ``model.optimizer.lr=5e-5`` or
``model.lr_schedule.budget_min=5`` on a resume composed, was saved in the new run's
``.hydra/config.yaml``, and changed nothing. :class:`RecipeRecord` saves the resolved values of
those keys (:data:`RESTORED`) in every checkpoint; :func:`check_resumed_recipe` compares them
with the resuming config before training and names every difference.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from omegaconf import DictConfig, ListConfig, OmegaConf

from detr_lightning.checkpointing.validate import CheckpointLoadError

# The keys whose effect a resume takes from the checkpoint instead of the config.
RESTORED = ("model.optimizer", "model.lr_backbone", "model.lr_multipliers", "model.lr_scaling",
            "model.base_batch_size", "model.lr_schedule")  # fmt: skip


def recipe_record(cfg: DictConfig) -> dict[str, Any]:
    """{dotted key: resolved value} of every leaf under :data:`RESTORED` in ``cfg``."""
    out: dict[str, Any] = {}
    for key in RESTORED:
        node = OmegaConf.select(cfg, key)
        value = (
            OmegaConf.to_container(node, resolve=True)
            if isinstance(node, (DictConfig, ListConfig))
            else node
        )
        _flatten(key, value, out)
    return out


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    else:
        out[prefix] = value


class RecipeRecord(L.Callback):
    """Saves :func:`recipe_record` of the training config in the checkpoint (state only)."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def state_dict(self) -> dict[str, Any]:
        return {"recipe": dict(self.record)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the comparison ran before ``fit`` (:func:`check_resumed_recipe`)."""


def check_resumed_recipe(checkpoint: Any, cfg: DictConfig, path: str) -> None:
    """CheckpointLoadError listing each :data:`RESTORED` key whose value in ``cfg`` differs from
    the one recorded in the checkpoint ``path`` (nothing to compare in a checkpoint without a
    record, e.g. one written before the record existed)."""
    states = checkpoint.get("callbacks", {}) if isinstance(checkpoint, dict) else {}
    saved = next((s["recipe"] for k, s in states.items()
                  if "RecipeRecord" in str(k) and isinstance(s, dict) and "recipe" in s), None)  # fmt: skip
    if saved is None:
        return
    current = recipe_record(cfg)
    changed = [f"{k}: {saved.get(k, '(absent)')!r} in the run, {current.get(k, '(absent)')!r} here"
               for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)]  # fmt: skip
    if changed:
        raise CheckpointLoadError(
            f"ckpt_path={path}: resuming restores the optimiser and the lr schedule from the "
            "checkpoint, so these settings, which differ from the run's, would be ignored:\n  - "
            + "\n  - ".join(changed)
            + "\nFix: drop those overrides to resume the run as it was; to train on from its "
            f"weights with the new settings, start a new run: ckpt_path=null "
            f"model.init_detector={path}."
        )
