"""Learning-rate rules of the training recipe: step decay with optional warm-up, batch scaling."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch

log = logging.getLogger(__name__)

PAPER_TOTAL_BATCH = 64  # DETR: 16 V100 x 4 images (the released R50: 32 GPUs x 2 images)


class WarmupStepDecay:
    """Multiplicative lr factor per optimizer step, for ``torch.optim.lr_scheduler.LambdaLR``.

    factor(step) = min(1, (step + 1) / warmup_steps) * gamma ** (#milestones <= step), where the
    milestones are the paper's drop epochs converted to optimizer steps; with ``cosine_steps``
    > 0 also times (1 + cos(pi * min(step, cosine_steps) / cosine_steps)) / 2, a decay to zero
    at the end of training (short runs gain from spending the whole budget annealing). A class
    rather than a closure so that LambdaLR saves its fields in checkpoints and resumption
    continues exactly.
    """

    def __init__(
        self,
        warmup_steps: int,
        milestone_steps: Sequence[int],
        gamma: float,
        cosine_steps: int = 0,
    ) -> None:
        self.warmup_steps = int(warmup_steps)
        self.milestone_steps = sorted(int(s) for s in milestone_steps)
        self.gamma = float(gamma)
        self.cosine_steps = int(cosine_steps)

    def __call__(self, step: int) -> float:
        warm = min(1.0, (step + 1) / self.warmup_steps) if self.warmup_steps > 0 else 1.0
        drops = sum(step >= m for m in self.milestone_steps)
        cosine = 1.0
        if self.cosine_steps > 0:
            cosine = 0.5 * (
                1 + math.cos(math.pi * min(step, self.cosine_steps) / self.cosine_steps)
            )
        return warm * self.gamma**drops * cosine


def drop_epochs(lr_drop_epochs: int | Sequence[int] | None) -> list[int]:
    """Normalise the config value: None -> [], 200 -> [200] (ONE drop, the paper's schedule)."""
    if lr_drop_epochs is None:
        return []
    if isinstance(lr_drop_epochs, int):
        return [lr_drop_epochs]
    return [int(e) for e in lr_drop_epochs]


def milestone_steps(epochs: Sequence[int], steps_per_epoch: int) -> list[int]:
    """Optimizer step at which each drop epoch starts (epochs are 0-based, as Lightning's)."""
    return [e * steps_per_epoch for e in epochs]


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
    parameters) at ``lr_backbone``. Frozen parameters are never given to the optimizer."""
    backbone = [p for p in net.backbone.parameters() if p.requires_grad]
    ids = {id(p) for p in backbone}
    rest = [p for p in net.parameters() if p.requires_grad and id(p) not in ids]
    rest += [p for p in extra.parameters() if p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": rest, "lr": lr, "name": "main"}]
    if backbone and lr_backbone > 0:
        groups.append({"params": backbone, "lr": lr_backbone, "name": "backbone"})
    return groups


def steps_per_epoch(trainer: Any) -> int:
    """Optimizer steps per training epoch (after limit_train_batches and accumulation)."""
    trainer.fit_loop.setup_data()  # what estimated_stepping_batches does before counting
    batches = trainer.num_training_batches
    if batches == float("inf"):
        raise ValueError("model.lr_drop_epochs needs a training dataloader with a length")
    return max(1, -(-int(batches) // trainer.accumulate_grad_batches))


def build_optimizer(
    net: torch.nn.Module,
    criterion: torch.nn.Module,
    factory: Any,
    lr_backbone: float,
    scale: float = 1.0,
) -> torch.optim.Optimizer:
    """``factory`` (a partial optimizer with an ``lr``) over :func:`param_groups`, every lr x
    ``scale``."""
    lr = getattr(factory, "keywords", {}).get("lr")
    if lr is None:
        raise ValueError("model.optimizer needs an explicit lr (e.g. lr: 1.0e-4)")
    return factory(param_groups(net, criterion, lr * scale, lr_backbone * scale))


def configure_detr_optimization(
    net: torch.nn.Module,
    criterion: torch.nn.Module,
    factory: Any,
    hp: Mapping[str, Any],
    trainer: Any,
) -> dict[str, Any]:
    """Optimizer + per-step LambdaLR for Lightning's ``configure_optimizers``.

    ``hp``: lr_backbone, lr_scaling, batch_size, base_batch_size, warmup_steps, lr_drop_epochs
    (a list), lr_gamma, lr_cosine (LitDETR's hyper-parameters). The cosine decay spans
    ``trainer.max_epochs`` epochs."""
    scale = 1.0
    if hp["lr_scaling"] not in (None, "none", False):
        if hp["batch_size"] is None:
            raise ValueError("model.lr_scaling needs model.batch_size (the per-device batch)")
        total = hp["batch_size"] * trainer.world_size * trainer.accumulate_grad_batches
        scale = lr_scale_factor(hp["lr_scaling"], total, hp["base_batch_size"])
        log.info("lr scaling %s: total batch %d -> every lr x %.4g", hp["lr_scaling"], total, scale)
    optimizer = build_optimizer(net, criterion, factory, hp["lr_backbone"], scale)
    drops = hp["lr_drop_epochs"]
    cosine = bool(hp.get("lr_cosine"))
    steps = steps_per_epoch(trainer) if drops or cosine else 0
    cosine_steps = steps * trainer.max_epochs if cosine else 0
    if cosine and cosine_steps <= 0:
        raise ValueError("model.lr_cosine needs trainer.max_epochs > 0 (the decay's length)")
    factor = WarmupStepDecay(
        hp["warmup_steps"], milestone_steps(drops, steps), hp["lr_gamma"], cosine_steps
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
