"""Category id spaces: a slot for the largest id."""

from __future__ import annotations


def test_coco_id_space_has_a_slot_for_the_largest_id():
    """In COCO's id space the label of category id c is c itself, so ids up to 95 need 96
    slots (0..95)."""
    from detr_lightning.data.categories import label_map_from_categories

    cats = [{"id": 1, "name": "a"}, {"id": 95, "name": "b"}]
    assert label_map_from_categories(cats, coco_id_space=True) == list(range(96))


def test_differing_names_lists_ids_named_otherwise():
    """Only ids in both lists with another name (spaces ignored) are listed, sorted by id."""
    from detr_lightning.data.categories import differing_names

    a = [{"id": 3, "name": "cat"}, {"id": 1, "name": "disc"}, {"id": 2, "name": "dog "}]
    b = [{"id": 1, "name": "square"}, {"id": 2, "name": "dog"}, {"id": 5, "name": "x"}]
    assert differing_names(a, b) == [(1, "disc", "square")]


def test_categories_without_isthing_are_things_and_unused_slots_are_not():
    """Detection data has no "isthing": its classes are things. In a COCO-style id space the
    labels of no category (slot 0 here) are neither."""
    from detr_lightning.data.categories import is_thing_per_label, thing_labels

    cats = [{"id": 1, "name": "a"}, {"id": 2, "name": "b", "isthing": 0}]
    assert thing_labels(cats, [0, 1, 2]) == {1: True, 2: False}
    assert is_thing_per_label(cats, [0, 1, 2]) == [False, True, False]


def test_coco_names_are_recognised_whatever_their_case_and_spaces_and_ids_are_checked():
    import pytest

    from detr_lightning.data.categories import (
        coco_categories,
        is_coco_categories,
        label_map_from_categories,
    )

    shouted = [{**c, "name": f" {c['name'].upper()} "} for c in coco_categories(False)]
    assert is_coco_categories(shouted)
    assert label_map_from_categories(shouted) == list(range(91))  # COCO's id space
    with pytest.raises(ValueError, match="non-negative category ids, got -1"):
        label_map_from_categories([{"id": -1, "name": "a"}], coco_id_space=True)
