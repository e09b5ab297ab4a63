"""The arguments of :class:`~detr_lightning.detr.criterion.SetCriterion`, checked before any
step: a loss group or weight that computes nothing, a scoring the matcher reads otherwise, a
setting the scoring ignores. Each is refused with the config key and the fix."""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence

from torch import nn

from detr_lightning.detr.class_scoring import SoftmaxScoring
from detr_lightning.detr.extra_terms import check_extra_terms
from detr_lightning.errors import ExplainedError

_SUFFIX = re.compile(r"_(\d+|dn|enc|g\d+)$")


def base_loss_name(key: str) -> str:
    """Strip aux-layer (`_3`), denoising (`_dn`), encoder-proposal (`_enc`) and query-group
    (`_g2`) suffixes, repeatedly.

    "loss_ce_3" -> "loss_ce", "loss_bbox_dn_0" -> "loss_bbox", "loss_giou_g1_4" -> "loss_giou".
    """
    while (stripped := _SUFFIX.sub("", key)) != key:
        key = stripped
    return key


def check_criterion_args(
    loss_keys: Mapping[str, Sequence[str]],
    losses: Sequence[str],
    weight_dict: Mapping[str, float],
    extra_terms: Mapping[str, nn.Module],
    scoring: SoftmaxScoring,
    matcher_scoring: SoftmaxScoring,
    num_classes: int,
    eos_coef: float | None,
) -> None:
    """Refuse SetCriterion arguments that would be ignored or disagree (``loss_keys``: the
    weighted keys each loss group produces, the criterion class's ``LOSS_KEYS``)."""
    unknown = set(losses) - set(loss_keys)
    if unknown:
        raise ValueError(
            f"SetCriterion: unknown losses {sorted(unknown)}; choose from {list(loss_keys)}."
        )
    built_in = {k for keys in loss_keys.values() for k in keys}
    built_in |= {"class_error", "cardinality_error"}
    check_extra_terms(extra_terms, built_in, {base_loss_name(k) for k in weight_dict})
    produced = {k for name in losses for k in loss_keys[name]}
    produced |= {k for term in extra_terms.values() for k in term.keys}
    missing = {k for k in weight_dict if base_loss_name(k) not in produced}
    if missing:
        raise ValueError(
            f"SetCriterion: weight_dict has {sorted(missing)} but losses={list(losses)} does "
            "not compute them; add the loss group ('labels' or 'boxes') or the extra term, "
            "or drop the weight."
        )
    if matcher_scoring.num_logits(num_classes) != scoring.num_logits(num_classes):
        raise ValueError(
            f"SetCriterion: model.criterion.scoring is {scoring} but "
            f"model.criterion.matcher.scoring is {matcher_scoring}: they read the logits "
            "differently (a 'no object' column or not); give both the same scoring (the "
            "cls_loss config group sets them together)."
        )
    if not scoring.no_object and eos_coef is not None:
        raise ValueError(
            f"SetCriterion: eos_coef={eos_coef} has no effect with {scoring} (its logits "
            "have no 'no object' column); remove model.criterion.eos_coef."
        )
    if scoring.needs_matched_boxes and "boxes" not in losses:
        raise ValueError(
            f"SetCriterion: {scoring} scores classes by their matched boxes, so it needs "
            f"'boxes' in model.criterion.losses (got {list(losses)}); add it, or use "
            "cls_loss=focal."
        )


# Which lever computes each suffixed set of losses: the fix for a weight of a set not computed.
_SOURCES = {
    "_enc": "a dense head (queries=proposals or aux_head=conv)",
    "_dn": "denoiser=dn",
    "_g": "query groups (model.net.queries.groups)",
    "_": "aux_loss with more decoder layers (aux layer i: _i)",
}


def _source(key: str) -> str:
    tail = key[len(base_loss_name(key)) :]
    return next(src for suffix, src in _SOURCES.items() if tail.startswith(suffix))


def loss_sets(key: str) -> list[str]:
    """The suffixes of ``key`` beyond its base name: "loss_ce_dn_0" -> ["_dn", "_0"]."""
    tail = key[len(base_loss_name(key)) :]
    return ["_" + part for part in tail.split("_")[1:]]


class UnusedWeightError(ExplainedError, ValueError):
    """A ``weight_dict`` key names a loss that this model does not compute."""


def unused_weight_message(unused: Collection[str], produced: Collection[str] | None) -> str:
    """The error for weight_dict keys that name a loss set the model does not compute
    (``produced``: the loss keys of a training step; None when refused at build time)."""
    needs = "; ".join(f"{k}: {_source(k)}" for k in sorted(unused))
    removals = " ".join(f"'~model.criterion.weight_dict.{k}'" for k in sorted(unused))
    computed = (
        f"The losses computed are {sorted(k for k in produced if k.startswith('loss'))}. "
        if produced is not None
        else ""
    )
    return (
        f"model.criterion.weight_dict has {sorted(unused)}, but no such loss is computed, so the "
        f"weight would be silently ignored ({needs}). {computed}Fix: remove it ({removals}), or "
        "choose what computes it."
    )


def check_weights_used(weight_dict: Mapping[str, float], produced: Collection[str]) -> None:
    """Refuse a suffixed weight_dict key (``loss_ce_9``, ``loss_ce_enc``) that names none of the
    ``produced`` loss keys. A base name (``loss_ce``) applies to every set and is checked when
    the criterion is built; the suffixed sets exist only once a training step has run."""
    unused = [k for k in weight_dict if k != base_loss_name(k) and k not in produced]
    if unused:
        raise UnusedWeightError(unused_weight_message(unused, produced))
