"""The contract of ``SetCriterion(extra_terms=...)``, checked where a term breaks it.

A research loss added from the command line fails quietly in three ways when nothing checks it:
a term without a weight is logged but never trained, a term returning a name other than its
declared ``keys`` leaves its weight unused, and a term named like a paper loss replaces it. Each
is refused here with the term's name and the fix, as is a ``forward`` with the wrong arguments
(else a bare TypeError at the first step).
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Mapping, Sequence

from torch import Tensor, nn

from detr_lightning.detr.matched_pairs import MatchedPairs

CONTRACT = (
    "an extra term has `keys` (the loss names it returns) and forward(layers, targets, pairs, "
    "num_boxes) -> {name: [L] tensor}, one value per prediction set (README: Adding a loss term)"
)


def check_extra_terms(
    terms: Mapping[str, nn.Module],
    taken: Collection[str],
    weighted: Collection[str],
) -> None:
    """Refuse a term without ``keys``, a key that another term or a built-in loss already
    produces (``taken``), and a key without a weight (``weighted``: the base names of the
    weight_dict's entries; a weight of 0 logs the term without training it)."""
    owners: dict[str, str] = {}
    for name, term in terms.items():
        check_forward_signature(name, term)
        keys = getattr(term, "keys", None)
        if isinstance(keys, str) or not isinstance(keys, Sequence) or not keys:
            raise ValueError(
                f"model.criterion.extra_terms.{name} ({type(term).__name__}) has no `keys`; "
                f"{CONTRACT}. Fix: give the class a tuple of its loss names, e.g. keys = "
                f'("loss_{name}",).'
            )
        for key in keys:
            if key in taken or key in owners:
                owner = f"extra_terms.{owners[key]}" if key in owners else "a built-in loss"
                raise ValueError(
                    f"model.criterion.extra_terms.{name} returns {key!r}, which {owner} already "
                    "produces: one would replace the other in the total. Fix: give the term a "
                    "name of its own."
                )
            if key not in weighted:
                raise ValueError(
                    f"model.criterion.extra_terms.{name} returns {key!r}, which has no weight, so "
                    f"it would be logged but never trained. Fix: add "
                    f"+model.criterion.weight_dict.{key}=<weight> (0 logs it only)."
                )
            owners[key] = name


def check_forward_signature(name: str, term: nn.Module) -> None:
    """Refuse a term whose ``forward`` cannot take ``(layers, targets, pairs, num_boxes)``: at
    construction, by its config path, rather than as a bare TypeError at the first step (a
    TypeError raised inside a correct ``forward`` is left alone)."""
    forward = getattr(term, "forward", None)
    try:
        signature = inspect.signature(forward)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # not introspectable (a C function): the call will tell
        return
    try:
        signature.bind("layers", "targets", "pairs", "num_boxes")
    except TypeError as err:
        raise ValueError(
            f"model.criterion.extra_terms.{name} ({type(term).__name__}) has "
            f"forward{signature}, which cannot be called as forward(layers, targets, pairs, "
            f"num_boxes) ({err}); {CONTRACT}. Fix: give forward exactly those four arguments."
        ) from None


def call_extra_term(
    name: str,
    term: nn.Module,
    layers: Sequence[dict],
    targets: list[dict[str, Tensor]],
    pairs: MatchedPairs,
    num_boxes: Tensor,
) -> dict[str, Tensor]:
    """``term``'s losses of the L prediction sets ``layers``: {key: [L] tensor}, its declared
    ``keys`` exactly."""
    out = term(layers, targets, pairs, num_boxes)
    returned = set(out) if isinstance(out, Mapping) else None
    if returned != set(term.keys):
        raise ValueError(
            f"model.criterion.extra_terms.{name} returned "
            f"{sorted(returned) if returned is not None else type(out).__name__} but declares "
            f"keys {list(term.keys)}; {CONTRACT}."
        )
    for key, value in out.items():
        if not isinstance(value, Tensor) or tuple(value.shape) != (len(layers),):
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(
                f"model.criterion.extra_terms.{name} returned {key} of shape {shape}, expected "
                f"({len(layers)},): one loss per prediction set; {CONTRACT}."
            )
    return dict(out)
