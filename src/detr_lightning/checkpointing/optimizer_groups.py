"""Resuming needs the checkpoint's optimizer groups to be the ones this config builds.

``trainer.fit(ckpt_path=...)`` loads the optimizer's state group by group; when the groups
changed since the checkpoint was written (``model.lr_backbone`` set to 0, a new
``model.lr_multipliers`` key, e.g. the deformable lever's ``sampling_offsets`` group added to
the shapes preset after a run started), torch stops deep inside Lightning's loop with "loaded
state dict contains a parameter group that doesn't match the size of optimizer's group". Here
the two group lists are compared before training starts, and the message names both.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from detr_lightning.checkpointing.read import CheckpointLoadError
from detr_lightning.utils.lr import multiplied_param_groups


def _describe(groups: list[tuple[str, int]]) -> str:
    return ", ".join(f"{name} ({size} tensors)" for name, size in groups)


def built_groups(model: nn.Module) -> list[tuple[str, int]] | None:
    """(name, number of parameter tensors) of each group the LitDETR ``model`` would give its
    optimizer (lr scaling changes lrs, not groups); None for another kind of module."""
    hp = getattr(model, "hparams", {})
    if "lr_backbone" not in hp or not hasattr(model, "criterion"):
        return None
    # Group membership only: the lrs (1.0 here) do not decide which groups exist.
    groups = multiplied_param_groups(model.net, model.criterion, 1.0, hp["lr_backbone"],
                                     hp.get("lr_multipliers"))  # fmt: skip
    return [(g["name"], len(g["params"])) for g in groups]


def check_optimizer_groups(checkpoint: dict[str, Any], model: nn.Module, path: str) -> None:
    """CheckpointLoadError unless the first optimizer state of the Lightning ``checkpoint`` has
    the groups (names, sizes, order) that ``model`` builds; nothing to check without one."""
    states = checkpoint.get("optimizer_states") or []
    ours = built_groups(model)
    if not states or ours is None:
        return
    saved = [(g.get("name", "?"), len(g["params"])) for g in states[0].get("param_groups", [])]
    if len(saved) == len(ours) and all(
        size == own_size and name in ("?", own_name)  # groups saved without a name: sizes only
        for (name, size), (own_name, own_size) in zip(saved, ours, strict=True)
    ):
        return
    raise CheckpointLoadError(
        f"ckpt_path={path}: the checkpoint's optimizer has the parameter groups "
        f"{_describe(saved)}; this config builds {_describe(ours)}, so its optimizer state "
        "cannot be resumed (model.lr_backbone, model.lr_multipliers or the trainable parameters "
        "differ from the training run's). Fix: resume with the training run's settings (for a "
        "run started before a lever added a group, remove it, e.g. ~model.lr_multipliers), or "
        "train a new run."
    )
