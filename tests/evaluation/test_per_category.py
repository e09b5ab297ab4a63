"""The per-category records, tables and file of a test: every named category in label order, -1
(shown "-") where the split has none of it, COCO's unused id slots left out; a panoptic model's
PQ per category beside the box AP."""

from __future__ import annotations

import json
from types import SimpleNamespace

from detr_lightning.evaluation.per_category import (
    FILE_NAME,
    format_per_category_table,
    logged_scalars,
    module_records,
    per_category_markdown,
    per_category_pq_records,
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
    # the module's own label map, not the data's: its labels are the checkpoint's
    data = SimpleNamespace(category_names=NAMES, label_to_category_id=[0, 7, 8, 9, 10])
    path = report_per_category(module, data, tmp_path)
    assert path == str(tmp_path / FILE_NAME)
    written = json.loads((tmp_path / FILE_NAME).read_text())["bbox"]
    assert [(r["category_id"], r["name"], r["AP"]) for r in written] == [
        (1, "person", 0.75), (3, "car", -1.0), (4, "dog", -1.0)]  # fmt: skip
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


def _pq(pq: float, isthing: bool, tp: int = 1, fp: int = 0, fn: int = 0) -> dict:
    return {"PQ": pq, "SQ": max(pq, -1.0), "RQ": max(pq, -1.0), "tp": tp, "fp": fp, "fn": fn,
            "isthing": isthing}  # fmt: skip


def test_pq_records_follow_the_label_order_and_name_each_category_id() -> None:
    # keyed by category id, in an order other than the labels'
    # (9: a category of the split that the label map lacks: after the mapped ones)
    pq_per_class = {9: _pq(0.0, False, tp=0, fn=1), 4: _pq(0.5, True),
                    1: _pq(-1.0, True, tp=0), 3: _pq(0.25, False, fn=2), 7: _pq(1.0, True)}  # fmt: skip
    records = per_category_pq_records(pq_per_class, [0, 7, 1, 3, 4], NAMES)
    assert [(r["category_id"], r["name"], r["isthing"], r["PQ"], r["fn"]) for r in records] == [
        (7, "person", True, 1.0, 0),  # label 1
        (1, "", True, -1.0, 0),  # label 2: an unnamed slot, still listed as the metric has it
        (3, "car", False, 0.25, 2),
        (4, "dog", True, 0.5, 0),
        (9, "", False, 0.0, 1),
    ]
    table = format_per_category_table(records, "PQ", key="PQ").splitlines()
    assert table[1].split() == ["person", "1.000", "1", "-", "car", "0.250"]
    assert table[2].split() == ["dog", "0.500", "9", "0.000"]


def test_report_adds_the_panoptic_records_only_for_a_panoptic_test(tmp_path, capsys) -> None:
    hparams = {"label_to_category_id": LABEL_MAP}
    module = SimpleNamespace(test_per_class={1: {"AP": 0.75, "AR_100": 0.8}},
                             test_pq_per_class={1: _pq(0.6, True), 3: _pq(0.2, False)},
                             hparams=SimpleNamespace(get=hparams.get))  # fmt: skip
    report_per_category(module, SimpleNamespace(category_names=NAMES), tmp_path)
    written = json.loads((tmp_path / FILE_NAME).read_text())
    assert [(r["name"], r["PQ"]) for r in written["panoptic"]] == [("person", 0.6), ("car", 0.2)]
    assert [r["name"] for r in written["bbox"]] == ["person", "car", "dog"]
    printed = capsys.readouterr().out
    assert "PQ per category" in printed and "car    0.200" in printed
    module.test_pq_per_class = {}
    report_per_category(module, SimpleNamespace(category_names=NAMES), tmp_path / "detector")
    assert set(json.loads((tmp_path / "detector" / FILE_NAME).read_text())) == {"bbox"}
    assert "PQ per category" not in capsys.readouterr().out


def test_logged_scalars_name_each_category_or_its_id() -> None:
    records = [{"category_id": 1, "name": "person", "AP": 0.5, "AR_100": 0.6},
               {"category_id": 2, "name": "", "AP": -1.0, "AR_100": -1.0}]  # fmt: skip
    pq = [{"category_id": 3, "name": "sky", "PQ": 0.25}]
    assert logged_scalars(records, pq) == {
        "test_per_category/AP-person": 0.5,
        "test_per_category/AP-2": -1.0,
        "test_per_category/PQ-sky": 0.25,
    }


def test_categories_sharing_a_name_get_a_logged_key_each() -> None:
    """A user's json may name two categories alike ("sign" for two ids): each keeps its value."""
    records = [{"category_id": 4, "name": "sign", "AP": 0.1, "AR_100": 0.2},
               {"category_id": 9, "name": "sign", "AP": 0.7, "AR_100": 0.8},
               {"category_id": 5, "name": "car", "AP": 0.3, "AR_100": 0.4}]  # fmt: skip
    assert logged_scalars(records, []) == {
        "test_per_category/AP-sign-4": 0.1,
        "test_per_category/AP-sign-9": 0.7,
        "test_per_category/AP-car": 0.3,
    }
    table = format_per_category_table(records, "t")
    assert table.split("\n")[1].split() == ["sign-4", "0.100", "sign-9", "0.700", "car", "0.300"]
    other = [dict(r, AP=r["AP"] + 0.05) for r in records]
    report = per_category_markdown(["a", "b"], [{"bbox": records}, {"bbox": other}])
    assert report[4:7] == ["| sign-4 | 0.1000 | **0.1500** |",
                           "| sign-9 | 0.7000 | **0.7500** |",
                           "| car | 0.3000 | **0.3500** |"]  # fmt: skip


def test_a_test_without_label_map_or_names_lists_each_label_under_its_own_id() -> None:
    # a module built without a label map, tested without a datamodule: label i is category i,
    # with no name (fewer names than labels: an unnamed category, not an IndexError)
    module = SimpleNamespace(test_per_class={0: {"AP": 0.5, "AR_100": 0.5},
                                             2: {"AP": 0.25, "AR_100": 0.375}},
                             test_pq_per_class={2: _pq(0.75, True)},
                             hparams=SimpleNamespace(get=lambda key: None))  # fmt: skip
    records, pq_records = module_records(module, None)
    assert [(r["category_id"], r["name"], r["AP"]) for r in records] == [(0, "", 0.5),
                                                                         (2, "", 0.25)]  # fmt: skip
    assert [(r["category_id"], r["name"], r["PQ"]) for r in pq_records] == [(2, "", 0.75)]
    # names for the first labels only
    short = per_category_pq_records({4: _pq(0.5, True), 3: _pq(0.25, False)}, LABEL_MAP, NAMES[:4])
    assert [(r["category_id"], r["name"]) for r in short] == [(3, "car"), (4, "")]
    short = per_category_records({4: {"AP": 0.5, "AR_100": 0.5}}, LABEL_MAP, NAMES[:4])
    assert [(r["category_id"], r["name"]) for r in short] == [(1, "person"), (3, "car"), (4, "")]


def test_the_comparisons_rows_follow_the_runs_and_bold_only_a_best_of_different_values() -> None:
    a = {"bbox": [{"category_id": 3, "name": "cat", "AP": 0.5},
                  {"category_id": 1, "name": "dog", "AP": 0.25}]}  # fmt: skip
    b = {"bbox": [{"category_id": 1, "name": "dog", "AP": 0.25},
                  {"category_id": 3, "name": "cat", "AP": 0.75},
                  {"category_id": 2, "name": "bird", "AP": -1.0}],
         "panoptic": [{"category_id": 2, "name": "", "PQ": 0.125}]}  # fmt: skip
    assert per_category_markdown(["a", "b", "none"], [a, b, {}]) == [
        "## Box AP per category", "",
        "| category | a | b | none |", "|---|---|---|---|",
        "| cat | 0.5000 | **0.7500** | – |",  # in the order the first run lists them
        "| dog | 0.2500 | 0.2500 | – |",  # a tie: no best
        "| bird | – | -1.0000 | – |",  # then what a later run adds
        "",
        "## PQ per category", "",
        "| category | a | b | none |", "|---|---|---|---|",
        "| 2 | – | 0.1250 | – |",  # no name: its id
        "",
    ]  # fmt: skip
    assert per_category_markdown(["a"], [{}]) == []
