"""BatchLayout as a checkpoint records it: read back as written, None where none (or a malformed
one) was recorded."""

from __future__ import annotations

import pytest

from detr_lightning.data.batch_layout import BatchLayout


@pytest.mark.parametrize("layout", [BatchLayout(4), BatchLayout(2, 3, grouped=True)])
def test_a_recorded_layout_reads_back_as_written(layout: BatchLayout) -> None:
    assert BatchLayout.from_dict(layout.as_dict()) == layout
    as_text = {"batch_size": "4", "world_size": 1, "grouped": 0}  # a hand-edited record
    assert BatchLayout.from_dict(as_text) == BatchLayout(4)


@pytest.mark.parametrize(
    "state",
    [None, {}, {"batch_size": 2, "world_size": 1}, {"batch_size": None, "world_size": 1,
                                                    "grouped": False},
     {"batch_size": "two", "world_size": 1, "grouped": False}, [2, 1, False]],
    ids=["none", "empty", "no-grouped", "null-size", "text-size", "a-list"],
)  # fmt: skip
def test_a_missing_or_malformed_layout_reads_as_none(state) -> None:
    assert BatchLayout.from_dict(state) is None
