"""Checks that a built detector's parts agree: one class scoring everywhere (net, matcher,
criterion, post-processing), and a dense head wherever a dense-proposal matcher trains one."""

from __future__ import annotations

from torch import nn

from detr_lightning.detr.class_scoring import scoring_of

__all__ = ["check_consistent_heads"]


def check_consistent_heads(net: nn.Module, criterion: nn.Module, postprocess: nn.Module) -> None:
    """Raise when the class scoring (what the logits mean, conf/cls_loss/*) is not the same
    everywhere, or when a dense-proposal matcher has no dense head to train."""
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
