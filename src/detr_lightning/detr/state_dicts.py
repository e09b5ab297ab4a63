"""Comparing a saved state dict with a model's: what differs, and what the class count sizes.

Shared by every loader (official releases, ``ckpt_path=``, ``model.init_detector=``), so that
they agree on which tensors a new label set replaces and list differences the same way.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from detr_lightning.detr.class_scoring import SoftmaxScoring, scoring_or_default

CLASS_HEAD = "class_embed.weight"


def listing(items: list[str], limit: int = 8) -> str:
    """``[a, b, ... (+N more)]``: the first ``limit`` items of a message's list."""
    more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return "[" + ", ".join(items[:limit]) + more + "]"


def state_dict_differences(
    saved: dict[str, Any], own: dict[str, Any]
) -> tuple[list[str], list[str], list[str]]:
    """(keys only ``saved`` has, keys only ``own`` has, "key (shape) vs model (shape)" lines of
    the shared keys whose shapes differ), each sorted."""
    shapes = [
        f"{k} {tuple(saved[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(saved) & set(own))
        if tuple(saved[k].shape) != tuple(own[k].shape)
    ]
    return sorted(set(saved) - set(own)), sorted(set(own) - set(saved)), shapes


def class_count_keys(saved: dict[str, Tensor], own: dict[str, Tensor]) -> list[str]:
    """The shared keys sized by the class count: first dimension that of the saved
    ``class_embed`` head, or one less (logits with and without "no object"), and differing by
    exactly the two heads' difference, all else equal (the class head, and an extension's
    per-class tables such as a denoiser's label embedding); [] when the class counts agree.

    Both dicts are a detector's (``class_embed.weight`` [C_logits, d] at the top level)."""
    if CLASS_HEAD not in saved or CLASS_HEAD not in own:
        return []
    rows = saved[CLASS_HEAD].shape[0]
    delta = rows - own[CLASS_HEAD].shape[0]
    return sorted(
        k
        for k in set(saved) & set(own)
        if delta
        and saved[k].dim() == own[k].dim() >= 1
        and saved[k].shape[0] in (rows, rows - 1)
        and saved[k].shape[1:] == own[k].shape[1:]
        and saved[k].shape[0] - own[k].shape[0] == delta
    )


def num_classes(sd: dict[str, Tensor], scoring: SoftmaxScoring | None = None) -> int:
    """The real classes of a detector state dict's class head ``class_embed.weight``
    [num_logits, d] under ``scoring`` (None: the paper's softmax, whose last row is "no
    object", as in every official release)."""
    return int(sd[CLASS_HEAD].shape[0]) - scoring_or_default(scoring).num_logits(0)
