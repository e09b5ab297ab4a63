"""Checks that a built detector's parts agree: one classification loss everywhere (net, matcher,
criterion, post-processing), and a dense head wherever a dense-proposal matcher trains one."""

from __future__ import annotations

from torch import nn

__all__ = ["check_consistent_heads"]


def check_consistent_heads(net: nn.Module, criterion: nn.Module, postprocess: nn.Module) -> None:
    """Raise when the classification loss is not the same everywhere (conf/cls_loss/*), or when
    a dense-proposal matcher has no dense head to train."""
    focal = {
        "model.net.focal": getattr(net, "focal", False),
        "model.criterion.focal": getattr(criterion, "focal", False),
        "model.criterion.matcher.focal": getattr(
            getattr(criterion, "matcher", None), "focal", False
        ),
        "model.postprocess.focal": getattr(postprocess, "focal", False),
    }
    if len(set(focal.values())) > 1:
        raise ValueError(
            f"focal classification is set in some places only: {focal}; choose cls_loss=focal or "
            "cls_loss=softmax instead of setting the keys one by one."
        )
    dense_head = getattr(net, "aux_head", None) is not None or hasattr(
        getattr(net, "queries", None), "head"
    )
    if getattr(criterion, "encoder_matcher", None) is not None and not dense_head:
        raise ValueError(
            "model.criterion.encoder_matcher trains a dense proposal head, but model.net has "
            "none: choose queries=proposals or aux_head=conv, or remove encoder_matcher."
        )
