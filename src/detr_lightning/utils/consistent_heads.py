"""Checks that a built detector's parts agree: one class scoring everywhere (net, matcher,
criterion, post-processing), a dense head wherever a dense-proposal matcher trains one, and
no weight for the ``_enc`` / ``_dn`` losses of a dense head or denoiser the model lacks."""

from __future__ import annotations

from torch import nn

from detr_lightning.detr.class_scoring import scoring_of
from detr_lightning.detr.criterion_args import UnusedWeightError, loss_sets, unused_weight_message

__all__ = ["check_consistent_heads"]


def check_consistent_heads(net: nn.Module, criterion: nn.Module, postprocess: nn.Module) -> None:
    """Raise when the class scoring (what the logits mean, conf/cls_loss/*) is not the same
    everywhere, when a dense-proposal matcher has no dense head to train, or when weight_dict
    weighs ``_enc`` / ``_dn`` losses that no dense head / denoiser computes."""
    scorings = {
        "model.net.scoring": scoring_of(net),
        "model.criterion.scoring": scoring_of(criterion),
        "model.criterion.matcher.scoring": scoring_of(getattr(criterion, "matcher", None)),
        "model.postprocess.scoring": scoring_of(postprocess),
    }
    # the same class and settings (separate instances: Hydra builds one per interpolation)
    settings = [(type(s), vars(s)) for s in scorings.values()]
    if any(other != settings[0] for other in settings[1:]):
        listed = ", ".join(f"{key}={s}" for key, s in scorings.items())
        raise ValueError(
            f"the class scoring differs between the model's parts: {listed}; choose "
            "cls_loss=focal, varifocal or softmax instead of setting the keys one by one."
        )
    dense_head = getattr(net, "aux_head", None) is not None or hasattr(
        getattr(net, "queries", None), "head"
    )
    if getattr(criterion, "encoder_matcher", None) is not None and not dense_head:
        raise ValueError(
            "model.criterion.encoder_matcher trains a dense proposal head, but model.net has "
            "none: choose queries=proposals or aux_head=conv, or remove encoder_matcher."
        )
    weights = getattr(criterion, "weight_dict", None) or {}
    dead = [  # the sets a training step will not have: refused now, not at the first step
        key
        for key in weights
        if ("_enc" in loss_sets(key) and not dense_head)
        or ("_dn" in loss_sets(key) and getattr(net, "denoiser", None) is None)
    ]
    if dead:
        raise UnusedWeightError(unused_weight_message(dead, None))
