"""PQ / SQ / RQ against hand-counted tiny panoptic cases written as real PNG + json files.

Every image is 10 x 10 pixels (a row is 10 pixels). Unless a test says otherwise the ground
truth is ``A`` (category 1, a thing) on rows 0-4 and ``B`` (category 50, stuff) on rows 5-9.
Categories 2 (thing) and 200 (stuff) only appear where a test puts them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

from detr_lightning.evaluation import PanopticQualityMetric, pq_compute
from detr_lightning.evaluation.panoptic import ClassStats, match_image

CATEGORIES = [
    {"id": 1, "name": "thing_a", "isthing": 1},
    {"id": 2, "name": "thing_b", "isthing": 1},
    {"id": 50, "name": "stuff_c", "isthing": 0},
    {"id": 200, "name": "stuff_d", "isthing": 0},
]
# Ids above 255 use the G and B bytes of the PNG, so the RGB decoding is exercised.
A, B, CROWD, D = 5000, 70001, 4242, 777


class Case(NamedTuple):
    gt: np.ndarray  # int [H, W] ground-truth ids, 0 = VOID
    gt_cats: dict[int, int]  # segment id -> category id
    pred: np.ndarray
    pred_cats: dict[int, int]
    crowd: tuple[int, ...] = ()


def base_gt() -> np.ndarray:
    gt = np.zeros((10, 10), np.int64)
    gt[:5], gt[5:] = A, B
    return gt


GT_CATS = {A: 1, B: 50}


def to_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536 % 256], -1).astype(np.uint8)


def gt_segments(case: Case) -> list[dict]:
    # Like COCO's json, the ground truth carries its pixel-count area.
    return [
        {
            "id": s,
            "category_id": c,
            "iscrowd": int(s in case.crowd),
            "area": int((case.gt == s).sum()),
        }
        for s, c in case.gt_cats.items()
    ]


def pred_segments(case: Case) -> list[dict]:
    return [{"id": s, "category_id": c} for s, c in case.pred_cats.items()]


def write(tmp_path: Path, cases: list[Case], gt_segs=None, pred_segs=None) -> tuple[Path, ...]:
    """Write ``cases`` as panopticapi-layout files; ``*_segs`` override image 0's segments_info."""
    anns: dict[str, list] = {"gt": [], "pred": []}
    for kind in anns:
        (tmp_path / kind).mkdir(exist_ok=True)
    for i, case in enumerate(cases):
        name = f"{i:012d}.png"
        Image.fromarray(to_rgb(case.gt)).save(tmp_path / "gt" / name)
        Image.fromarray(to_rgb(case.pred)).save(tmp_path / "pred" / name)
        gs = gt_segs if i == 0 and gt_segs is not None else gt_segments(case)
        ps = pred_segs if i == 0 and pred_segs is not None else pred_segments(case)
        anns["gt"].append({"image_id": i, "file_name": name, "segments_info": gs})
        anns["pred"].append({"image_id": i, "file_name": name, "segments_info": ps})
    for kind, image_anns in anns.items():
        body = {"annotations": image_anns, "categories": CATEGORIES}
        (tmp_path / f"{kind}.json").write_text(json.dumps(body))
    return tmp_path / "gt.json", tmp_path / "pred.json", tmp_path / "gt", tmp_path / "pred"


def evaluate(tmp_path: Path, *cases: Case) -> dict:
    return pq_compute(*write(tmp_path, list(cases)))


def check(group: dict, pq: float, sq: float, rq: float, n: int) -> None:
    assert group == {
        "pq": pytest.approx(pq),
        "sq": pytest.approx(sq),
        "rq": pytest.approx(rq),
        "n": n,
    }


def test_perfect_prediction(tmp_path: Path) -> None:
    pred = np.where(base_gt() == A, 7, 300)  # other ids, same segments
    res = evaluate(tmp_path, Case(base_gt(), GT_CATS, pred, {7: 1, 300: 50}))
    check(res["All"], 1, 1, 1, 2)  # categories 2 and 200 have no gt and no pred: not averaged
    check(res["Things"], 1, 1, 1, 1)
    check(res["Stuff"], 1, 1, 1, 1)
    assert res["per_class"][200] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    assert set(res["per_class"]) == {1, 2, 50, 200}


def test_one_false_positive_and_things_stuff_split(tmp_path: Path) -> None:
    pred = base_gt()
    pred[5:, :2] = 9  # 10 pixels of B predicted as a second category-1 thing
    res = evaluate(tmp_path, Case(base_gt(), GT_CATS, pred, {A: 1, B: 50, 9: 1}))
    # cat 1: tp 1 (IoU 1), fp 1 -> PQ = 1 / 1.5, SQ 1, RQ 2/3; cat 50: IoU 40/50, tp 1.
    assert res["per_class"][1] == pytest.approx({"pq": 2 / 3, "sq": 1.0, "rq": 2 / 3})
    check(res["Things"], 2 / 3, 1, 2 / 3, 1)
    check(res["Stuff"], 0.8, 0.8, 1, 1)
    check(res["All"], (2 / 3 + 0.8) / 2, 0.9, (2 / 3 + 1) / 2, 2)


def test_one_miss(tmp_path: Path) -> None:
    gt = base_gt()
    gt[5:, :2] = D  # a category-2 thing of 10 pixels, not predicted
    pred = base_gt()  # B predicted over D's pixels too: IoU 40/50 (D is not VOID)
    res = evaluate(tmp_path, Case(gt, {A: 1, B: 50, D: 2}, pred, {A: 1, B: 50}))
    assert res["per_class"][2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    check(res["Things"], 0.5, 0.5, 0.5, 2)  # cat 2: fn 1 counts in the mean
    check(res["All"], 1.8 / 3, 1.8 / 3, 2 / 3, 3)


@pytest.mark.parametrize(
    ("pixels", "iou"),
    [(26, 0.52), (25, None), (24, None)],  # IoU 26/50 matches; exactly 0.5 and 24/50 do not
)
def test_iou_threshold(tmp_path: Path, pixels: int, iou: float | None) -> None:
    pred = base_gt()
    pred[:5] = 0
    pred.reshape(-1)[:pixels] = A  # the first `pixels` of A's 50, in raster order
    res = evaluate(tmp_path, Case(base_gt(), GT_CATS, pred, {A: 1, B: 50}))
    if iou is None:  # an unmatched pred (fp, not on VOID) and an unmatched gt (fn)
        assert res["per_class"][1] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
        check(res["All"], 0.5, 0.5, 0.5, 2)
    else:
        assert res["per_class"][1] == pytest.approx({"pq": iou, "sq": iou, "rq": 1.0})
        check(res["All"], (iou + 1) / 2, (iou + 1) / 2, 1, 2)


def test_void_pixels_leave_the_union(tmp_path: Path) -> None:
    gt = base_gt()
    gt[:4], gt[4:6], gt[6:] = A, 0, B  # A: 40 px, VOID rows 4-5, B: 40 px
    pred = gt.copy()
    pred[3], pred[4:6] = 0, A  # A predicted on rows 0-2 (30 of its px) + the 20 VOID px
    # union = 50 + 40 - 30 = 60 would give IoU 0.5 (no match); minus the 20 VOID px: 30/40.
    res = evaluate(tmp_path, Case(gt, GT_CATS, pred, {A: 1, B: 50}))
    assert res["per_class"][1] == pytest.approx({"pq": 0.75, "sq": 0.75, "rq": 1.0})
    check(res["All"], 0.875, 0.875, 1, 2)


def crowd_case(pred_cat: int) -> Case:
    gt = base_gt()
    gt[5:8] = CROWD  # a category-1 crowd region of 30 px; B keeps rows 8-9
    pred = gt.copy()
    pred[5:8] = 9  # a prediction exactly on the crowd region
    return Case(gt, {A: 1, CROWD: 1, B: 50}, pred, {A: 1, 9: pred_cat, B: 50}, crowd=(CROWD,))


def test_crowd_region_is_neither_fn_nor_fp(tmp_path: Path) -> None:
    res = evaluate(tmp_path, crowd_case(pred_cat=1))
    check(res["All"], 1, 1, 1, 2)


def test_a_prediction_on_a_crowd_region_is_never_matched_to_it(tmp_path: Path) -> None:
    case = crowd_case(pred_cat=1)
    case.pred[5] = 0  # 20 of the crowd's 30 px: IoU 2/3 > 0.5, yet a crowd is never a match
    res = evaluate(tmp_path, case)
    # class 1: A alone is a true positive (IoU 1); the prediction on the crowd is excused
    assert res["per_class"][1] == pytest.approx({"pq": 1.0, "sq": 1.0, "rq": 1.0})
    check(res["All"], 1, 1, 1, 2)


def test_crowd_region_only_excuses_its_own_category(tmp_path: Path) -> None:
    res = evaluate(tmp_path, crowd_case(pred_cat=2))  # a category-2 pred on a category-1 crowd
    assert res["per_class"][2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}
    check(res["All"], 2 / 3, 2 / 3, 2 / 3, 3)


def test_crowd_pixels_stay_in_the_union(tmp_path: Path) -> None:
    case = crowd_case(pred_cat=1)
    case.pred[5:8] = A  # A's prediction spills over the whole crowd region: 80 px
    res = evaluate(tmp_path, case._replace(pred_cats={A: 1, B: 50}))
    # panopticapi subtracts only VOID from the union: IoU = 50 / (80 + 50 - 50) = 0.625
    assert res["per_class"][1] == pytest.approx({"pq": 0.625, "sq": 0.625, "rq": 1.0})


@pytest.mark.parametrize(("rows", "is_fp"), [((5, 6, 7), False), ((6, 7), True)])
def test_unmatched_prediction_mostly_on_void(tmp_path: Path, rows: tuple, is_fp: bool) -> None:
    gt = base_gt()
    gt[5:7] = 0  # VOID rows 5-6; B keeps rows 7-9 (30 px)
    pred = gt.copy()
    pred[list(rows)] = 9  # category 2: 20 of 30 px on VOID (ignored) or 10 of 20 (0.5: an fp)
    res = evaluate(tmp_path, Case(gt, GT_CATS, pred, {A: 1, B: 50, 9: 2}))
    stuff = 20 / 30  # B's pred lost row 7: IoU 20/30
    assert res["per_class"][50] == pytest.approx({"pq": stuff, "sq": stuff, "rq": 1.0})
    if is_fp:
        check(res["All"], (1 + stuff) / 3, (1 + stuff) / 3, 2 / 3, 3)
    else:
        check(res["All"], (1 + stuff) / 2, (1 + stuff) / 2, 1, 2)


def test_ground_truth_area_comes_from_the_json(tmp_path: Path) -> None:
    case = Case(base_gt(), GT_CATS, base_gt(), {A: 1, B: 50})
    gt_segs = gt_segments(case)
    gt_segs[0]["area"] = 60  # panopticapi trusts the json: IoU = 50 / (50 + 60 - 50)
    res = pq_compute(*write(tmp_path, [case], gt_segs=gt_segs))
    assert res["per_class"][1]["pq"] == pytest.approx(50 / 60)
    del gt_segs[0]["area"]  # without an area, the pixel count is used
    assert pq_compute(*write(tmp_path, [case], gt_segs=gt_segs))["All"]["pq"] == 1.0


def test_errors_name_file_and_segment(tmp_path: Path) -> None:
    case = Case(base_gt(), GT_CATS, base_gt(), {A: 1, B: 50})
    pred_png = re.escape(str(tmp_path / "pred" / f"{0:012d}.png"))
    bad = [
        ([{"id": A, "category_id": 1}], rf"{pred_png}.*segment id {B} is in the id map"),
        (
            [*pred_segments(case), {"id": 12, "category_id": 1}],
            rf"{pred_png}.*segment id 12 is in segments_info, not the id map",
        ),
        ([{"id": A, "category_id": 1}, {"id": B, "category_id": 99}], rf"{pred_png}.*{B}.*99"),
        ([*pred_segments(case), {"id": A, "category_id": 1}], rf"{pred_png}.*{A}.*duplicate"),
    ]
    for pred_segs, message in bad:
        with pytest.raises(ValueError, match=message):
            pq_compute(*write(tmp_path, [case], pred_segs=pred_segs))

    gt_json, pred_json, gt_dir, pred_dir = write(tmp_path, [case, case])
    body = json.loads(pred_json.read_text())
    pred_json.write_text(json.dumps({**body, "annotations": body["annotations"][:1]}))
    with pytest.raises(ValueError, match="no prediction .* image_id 1"):
        pq_compute(gt_json, pred_json, gt_dir, pred_dir)

    small = Case(base_gt(), GT_CATS, base_gt()[:8], {A: 1, B: 50})
    with pytest.raises(ValueError, match=r"\(8, 10\) does not match .*\(10, 10\)"):
        pq_compute(*write(tmp_path, [small]))


def random_case(rng: np.random.Generator) -> Case:
    """Blocky random maps: gt segments of categories 1/2/50 with VOID and a crowd region."""
    gt = rng.integers(0, 6, (5, 5)).repeat(2, 0).repeat(2, 1)
    pred = np.where(rng.random((10, 10)) < 0.8, gt, rng.integers(0, 6, (10, 10)))
    gt_cats = {1: 1, 2: 1, 3: 2, 4: 50, 5: 1}
    pred_cats = {i: gt_cats[i] for i in range(1, 6) if (pred == i).any()}
    keep = {i: c for i, c in gt_cats.items() if (gt == i).any()}
    return Case(gt, keep, pred, pred_cats, crowd=(5,))


def as_image(ids: np.ndarray, segments: list[dict]) -> dict:
    return {"ids": torch.from_numpy(ids), "segments_info": segments}


def metric_update(metric: PanopticQualityMetric, case: Case) -> None:
    pred = as_image(case.pred, pred_segments(case))
    metric.update(pred, as_image(case.gt, gt_segments(case)))


def test_metric_equals_pq_compute_and_merges_like_ddp(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cases = [random_case(rng) for _ in range(6)]
    res = pq_compute(*write(tmp_path, cases))
    expected = {
        f"{key.upper()}{suffix}": res[group][key]
        for suffix, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff"))
        for key in ("pq", "sq", "rq")
    }
    assert 0 < res["All"]["pq"] < 1 and res["Things"]["n"] == 2 and res["Stuff"]["n"] == 1

    single = PanopticQualityMetric(CATEGORIES)
    for case in cases:
        metric_update(single, case)
    assert single.compute() == pytest.approx(expected)

    # Two "ranks" see half of the images each; summing their states is DDP's reduction.
    rank0, rank1 = PanopticQualityMetric(CATEGORIES), PanopticQualityMetric(CATEGORIES)
    for i, case in enumerate(cases):
        metric_update(rank1 if i % 2 else rank0, case)
    rank0.merge_state(rank1)
    assert rank0.compute() == pytest.approx(expected)


def test_metric_batched_update_and_errors() -> None:
    case = Case(base_gt(), GT_CATS, base_gt(), {A: 1, B: 50})
    pred = as_image(case.pred, pred_segments(case))
    gt = as_image(case.gt, gt_segments(case))
    metric = PanopticQualityMetric(CATEGORIES)
    metric.update([pred, pred], [gt, gt])
    keys = [f"{m}{s}" for s in ("", "_th", "_st") for m in ("PQ", "SQ", "RQ")]
    assert metric.compute() == {key: 1.0 for key in keys}
    assert metric.tp.tolist() == [2, 0, 2, 0]
    named = {**pred, "name": "image_id 7", "segments_info": [{"id": A, "category_id": 1}]}
    with pytest.raises(ValueError, match=f"image_id 7: segment id {B} is in the id map"):
        metric.update(named, gt)
    with pytest.raises(ValueError, match="duplicate ids"):
        PanopticQualityMetric([*CATEGORIES, CATEGORIES[0]])


def test_a_prediction_of_another_category_never_matches() -> None:
    # panopticapi matches only same-category pairs: the same pixels under category 2 are a
    # miss of category 1 and a false positive of category 2 (PQ 0), not a true positive
    ids = torch.ones(4, 4, dtype=torch.long)
    gt = {"ids": ids, "segments_info": [{"id": 1, "category_id": 1, "iscrowd": 0}]}
    pred = {"ids": ids * 2, "segments_info": [{"id": 2, "category_id": 2}]}
    stats = match_image(pred, gt, {1, 2})
    assert stats == {1: ClassStats(fn=1), 2: ClassStats(fp=1)}


@pytest.mark.parametrize(("row", "is_fp"), [(0, True), (1, False)])
def test_only_the_last_crowd_region_of_a_category_excuses_a_prediction(row: int, is_fp: bool):
    # panopticapi keeps one crowd segment per category, the last of segments_info
    # (crowd_labels_dict[category_id] = gt_label in its loop): a prediction lying on the first
    # of two category-1 crowd regions is a false positive, one on the second is excused
    gt_ids = torch.ones(4, 4, dtype=torch.long)
    gt_ids[0], gt_ids[1] = 3, 4  # row 0: crowd 3, row 1: crowd 4, rows 2-3: segment 1
    segments = [{"id": g, "category_id": 1, "iscrowd": int(g != 1)} for g in (1, 3, 4)]
    pred_ids = torch.ones(4, 4, dtype=torch.long)
    pred_ids[:2] = 0
    pred_ids[row] = 9
    pred = {"ids": pred_ids, "segments_info": [{"id": p, "category_id": 1} for p in (1, 9)]}
    stats = match_image(pred, {"ids": gt_ids, "segments_info": segments}, {1})
    assert stats == {1: ClassStats(tp=1, fp=int(is_fp), iou=1.0)}


def test_metric_states_keep_false_positives_and_misses_apart() -> None:
    # category 1 missed (fn), category 2 predicted where there is none (fp); PQ is symmetric
    # in fp and fn, so only the states can tell them apart
    ids = torch.ones(4, 4, dtype=torch.long)
    gt = {"ids": ids, "segments_info": [{"id": 1, "category_id": 1, "iscrowd": 0}]}
    pred = {"ids": ids * 2, "segments_info": [{"id": 2, "category_id": 2}]}
    metric = PanopticQualityMetric(CATEGORIES)
    metric.update(pred, gt)
    assert metric.fn.tolist() == [1, 0, 0, 0] and metric.fp.tolist() == [0, 1, 0, 0]
