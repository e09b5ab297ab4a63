"""The per-category records, table and file of a test: every named category in label order, -1
(shown "-") where the split has none of it, COCO's unused id slots left out."""

from __future__ import annotations

import json
from types import SimpleNamespace

from detr_lightning.evaluation.per_category import (
    FILE_NAME,
    format_per_category_table,
    per_category_records,
    report_per_category,
)

# label -> category id as in COCO's id space: slot 0 and id 2 unused
LABEL_MAP = [0, 1, 2, 3, 4]
NAMES = ["", "person", "", "car", "dog"]


def test_records_keep_every_named_category_in_label_order_and_drop_unused_slots() -> None:
    per_class = {1: {"AP": 0.5, "AR_100": 0.625}, 4: {"AP": -1.0, "AR_100": -1.0}}
    records = per_category_records(per_class, LABEL_MAP, NAMES)
    assert records == [
        {"category_id": 1, "name": "person", "AP": 0.5, "AR_100": 0.625},
        {"category_id": 3, "name": "car", "AP": -1.0, "AR_100": -1.0},  # never seen
        {"category_id": 4, "name": "dog", "AP": -1.0, "AR_100": -1.0},  # detected, no gt
    ]


def test_a_label_seen_without_a_name_is_kept_under_its_id() -> None:
    records = per_category_records({2: {"AP": 0.0, "AR_100": 0.0}}, LABEL_MAP, NAMES)
    assert [r["category_id"] for r in records] == [1, 2, 3, 4]
    assert "2 " in format_per_category_table(records, "t").splitlines()[1]


def test_the_table_puts_three_categories_a_row_and_a_dash_for_undefined() -> None:
    records = [{"category_id": i, "name": n, "AP": ap, "AR_100": 0.0}
               for i, (n, ap) in enumerate([("a", 0.25), ("bb", -1.0), ("c", 1.0), ("d", 0.0)])]  # fmt: skip
    lines = format_per_category_table(records, "title").splitlines()
    assert lines[0] == "title"
    assert [line.split() for line in lines[1:]] == [
        ["a", "0.250", "bb", "-", "c", "1.000"],
        ["d", "0.000"],
    ]


def test_report_writes_the_file_with_the_datamodules_names(tmp_path, capsys) -> None:
    hparams = {"label_to_category_id": LABEL_MAP}
    module = SimpleNamespace(test_per_class={1: {"AP": 0.75, "AR_100": 0.8}},
                             hparams=SimpleNamespace(get=hparams.get))  # fmt: skip
    path = report_per_category(module, SimpleNamespace(category_names=NAMES), tmp_path)
    assert path == str(tmp_path / FILE_NAME)
    written = json.loads((tmp_path / FILE_NAME).read_text())["bbox"]
    assert [(r["name"], r["AP"]) for r in written] == [("person", 0.75), ("car", -1.0),
                                                       ("dog", -1.0)]  # fmt: skip
    assert "person 0.750" in capsys.readouterr().out
    unmapped = SimpleNamespace(test_per_class={1: {"AP": 0.5, "AR_100": 0.5}},
                               hparams=SimpleNamespace(get=lambda key: None))  # fmt: skip
    report_per_category(unmapped, SimpleNamespace(category_names=NAMES,
                                                  label_to_category_id=[0, 7, 8, 9, 10]),
                        tmp_path / "data_map")  # fmt: skip
    written = json.loads((tmp_path / "data_map" / FILE_NAME).read_text())["bbox"]
    assert [(r["category_id"], r["name"]) for r in written] == [(7, "person"), (9, "car"),
                                                               (10, "dog")]  # fmt: skip
    nothing = SimpleNamespace(test_per_class={}, hparams=module.hparams)
    assert report_per_category(nothing, None, tmp_path / "other") is None
