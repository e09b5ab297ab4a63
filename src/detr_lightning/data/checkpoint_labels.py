"""The label space a datamodule saves in its checkpoint state, and how a loaded one replaces the
one read from the data.

A :class:`~detr_lightning.data.datamodule.DetrDataModule` fixes its labels from the training
json's categories. The checkpoint's mapping wins on load: the class head was trained on it, and
evaluating or fine-tuning with another order would swap classes silently.
"""

from __future__ import annotations

import logging
from typing import Any

from detr_lightning.data.categories import describe_name_differences, differing_names

log = logging.getLogger(__name__)


def labels_state(label_to_category_id: list[int], categories: list[dict]) -> dict[str, Any]:
    """The checkpoint entries: the label -> category id list and the categories (ids, names)."""
    return {"label_to_category_id": list(label_to_category_id), "categories": list(categories)}


def adopt_labels(
    state: dict[str, Any],
    label_to_category_id: list[int],
    categories: list[dict],
    train_ann: str,
) -> tuple[list[int], list[dict]]:
    """The checkpoint's ``(label_to_category_id, categories)``, warning where they differ from the
    data's (``train_ann`` names the data's categories in the warning).

    A checkpoint without ``categories`` (an older one) keeps the data's names.
    """
    mapping = [int(c) for c in state["label_to_category_id"]]
    if mapping != list(label_to_category_id):
        log.warning("Checkpoint label mapping (%d classes) replaces the one from the data "
                    "(%d classes).", len(mapping), len(label_to_category_id))  # fmt: skip
    names = list(state.get("categories", categories))
    if diffs := differing_names(categories, names):
        log.warning(
            "The checkpoint names %d category id(s) otherwise than the data (%s); its names "
            "are used. If the data's classes changed meaning, fine-tuning or evaluating this "
            "checkpoint on it mixes classes: fix the categories of the data or start from "
            "another checkpoint.", len(diffs),
            describe_name_differences(diffs, train_ann, "the checkpoint"),
        )  # fmt: skip
    return mapping, names
