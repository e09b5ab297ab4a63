"""The optimizer of the training recipe: parameter groups (backbone lr) and batch-size lr scaling.
Schedules live in :mod:`detr_lightning.schedule`."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch

log = logging.getLogger(__name__)

PAPER_TOTAL_BATCH = 64  # DETR: 16 V100 x 4 images (the released R50: 32 GPUs x 2 images)


def lr_scale_factor(
    rule: str | None, total_batch: int, base_batch: int = PAPER_TOTAL_BATCH
) -> float:
    """Factor applied to every learning rate.

    ``rule``: None/"none" -> 1 (default: the configured lrs are used as written);
    "linear" -> total_batch / base_batch (Goyal et al. 2017); "sqrt" -> its square root (often
    better for Adam-type optimisers). ``total_batch`` = per-device batch x devices x nodes x
    gradient-accumulation steps.
    """
    if rule in (None, "none", False):
        return 1.0
    if total_batch < 1 or base_batch < 1:
        raise ValueError(f"lr scaling: batch sizes must be >= 1 (got {total_batch}, {base_batch})")
    if rule == "linear":
        return total_batch / base_batch
    if rule == "sqrt":
        return math.sqrt(total_batch / base_batch)
    raise ValueError(f"model.lr_scaling={rule!r}; use null, 'linear' or 'sqrt'")


def param_groups(
    net: torch.nn.Module, extra: torch.nn.Module, lr: float, lr_backbone: float
) -> list[dict[str, Any]]:
    """Optimizer groups: "main" (everything trainable but the backbone, plus ``extra``'s
    parameters) at ``lr`` and, when ``lr_backbone > 0``, "backbone" (``net.backbone``'s trainable
    parameters and a learned position encoding's, which the official code keeps under
    ``backbone.1`` and so trains at the backbone lr) at ``lr_backbone``. Frozen parameters, and
    those of the backbone group when ``lr_backbone`` is 0, are never given to the optimizer."""
    position = getattr(net, "position_encoding", None)
    backbone = [p for p in net.backbone.parameters() if p.requires_grad]
    if position is not None:
        backbone += [p for p in position.parameters() if p.requires_grad]
    ids = {id(p) for p in backbone}
    rest = [p for p in net.parameters() if p.requires_grad and id(p) not in ids]
    if lr_backbone <= 0:
        backbone = []
    rest += [p for p in extra.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": rest, "lr": lr, "name": "main"}]
    if backbone and lr_backbone > 0:
        groups.append({"params": backbone, "lr": lr_backbone, "name": "backbone"})
    return groups


def apply_lr_multipliers(
    net: torch.nn.Module, groups: list[dict[str, Any]], multipliers: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Split off, from each group, the parameters of ``net`` whose name contains a key of
    ``multipliers`` into a group at that multiple of the group's lr, named after the key
    (``backbone.<key>`` for the backbone's). The first matching key wins. Deformable DETR, for
    example, trains its sampling offsets at a tenth of the lr: ``{"sampling_offsets": 0.1}``.

    Raises ValueError naming ``model.lr_multipliers.<key>`` for a multiplier that is not a
    positive number or a key that matches no parameter name (a typo would change nothing). A key
    whose parameters are all frozen (the panoptic recipe's stage 2 freezes the detector) gets no
    group and no error."""
    names = {id(p): n for n, p in net.named_parameters()}
    for key, mult in multipliers.items():
        if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not mult > 0:
            raise ValueError(f"model.lr_multipliers.{key}={mult!r}: must be a positive number. "
                             f"Fix: e.g. model.lr_multipliers.{key}=0.1")  # fmt: skip
    if missing := [k for k in multipliers if not any(k in n for n in names.values())]:
        raise ValueError(
            f"model.lr_multipliers: no parameter's name contains {missing} (this "
            "model's names look like "
            f"{next(iter(names.values()), '?')!r}). Fix: use a part of a parameter name "
            "(print [n for n, _ in model.net.named_parameters()]), or remove the key."
        )
    out: list[dict[str, Any]] = []
    for group in groups:
        split: dict[str, list[torch.nn.Parameter]] = {key: [] for key in multipliers}
        rest = []
        for p in group["params"]:
            key = next((k for k in multipliers if k in names.get(id(p), "")), None)
            (split[key] if key is not None else rest).append(p)
        out.append({**group, "params": rest})
        for key, params in split.items():
            if params:
                name = key if group["name"] == "main" else f"{group['name']}.{key}"
                out.append({**group, "params": params, "lr": group["lr"] * multipliers[key],
                            "name": name})  # fmt: skip
    return [g for g in out if g["params"]]


def build_optimizer(
    net: torch.nn.Module,
    criterion: torch.nn.Module,
    factory: Any,
    lr_backbone: float,
    scale: float = 1.0,
    lr_multipliers: Mapping[str, float] | None = None,
) -> torch.optim.Optimizer:
    """``factory`` (a partial optimizer with an ``lr``) over :func:`param_groups`, every lr x
    ``scale``, with ``lr_multipliers`` applied (:func:`apply_lr_multipliers`)."""
    lr = getattr(factory, "keywords", {}).get("lr")
    if lr is None:
        raise ValueError("model.optimizer needs an explicit lr (e.g. lr: 1.0e-4)")
    return factory(
        multiplied_param_groups(net, criterion, lr * scale, lr_backbone * scale, lr_multipliers)
    )


def multiplied_param_groups(
    net: torch.nn.Module,
    criterion: torch.nn.Module,
    lr: float,
    lr_backbone: float,
    lr_multipliers: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """The optimizer's groups: :func:`param_groups`, then :func:`apply_lr_multipliers`."""
    groups = param_groups(net, criterion, lr, lr_backbone)
    return apply_lr_multipliers(net, groups, lr_multipliers) if lr_multipliers else groups


def build_scaled_optimizer(
    net: torch.nn.Module,
    criterion: torch.nn.Module,
    factory: Any,
    hp: Mapping[str, Any],
    trainer: Any,
) -> torch.optim.Optimizer:
    """The optimizer for Lightning's ``configure_optimizers``: :func:`build_optimizer` with every
    lr scaled by ``hp["lr_scaling"]`` (LitDETR's lr_backbone, lr_scaling, batch_size,
    base_batch_size, lr_multipliers) for the total batch of this trainer."""
    scale = 1.0
    if hp["lr_scaling"] not in (None, "none", False):
        if hp["batch_size"] is None:
            raise ValueError("model.lr_scaling needs model.batch_size (the per-device batch)")
        total = hp["batch_size"] * trainer.world_size * trainer.accumulate_grad_batches
        scale = lr_scale_factor(hp["lr_scaling"], total, hp["base_batch_size"])
        log.info("lr scaling %s: total batch %d -> every lr x %.4g", hp["lr_scaling"], total, scale)
    return build_optimizer(
        net, criterion, factory, hp["lr_backbone"], scale, hp.get("lr_multipliers")
    )
