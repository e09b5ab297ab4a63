"""The arguments of :class:`~detr_lightning.detr.criterion.SetCriterion`, checked before any
step: a loss group or weight that computes nothing, a scoring the matcher reads otherwise, a
setting the scoring ignores. Each is refused with the config key and the fix."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from torch import nn

from detr_lightning.detr.class_scoring import SoftmaxScoring
from detr_lightning.detr.extra_terms import check_extra_terms

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
