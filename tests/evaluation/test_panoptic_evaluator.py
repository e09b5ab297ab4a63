"""PanopticEvaluator: perfect predictions score 1, per-image PQ equals panopticapi's, a padded
repeat counts once, and a 2-process gloo evaluation equals the single-process one exactly."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ddp_workers import start_method

from detr_lightning.data.coco_panoptic import CocoPanopticDataset
from detr_lightning.data.collate import collate
from detr_lightning.data.shapes import generate_shapes_dataset
from detr_lightning.detr.panoptic_postprocess import PostProcessPanoptic, PostProcessSegm
from detr_lightning.evaluation import PanopticQualityMetric
from detr_lightning.evaluation.panoptic import PQ_KEYS
from detr_lightning.evaluation.panoptic_evaluator import (
    PanopticEvaluator,
    format_pq_table,
)
from detr_lightning.evaluation.panoptic_metrics import ImagePanopticQuality

Q = 12


def _evaluator() -> PanopticEvaluator:
    return PanopticEvaluator(
        functools.partial(PostProcessPanoptic, threshold=0.5, min_area=1), PostProcessSegm()
    )


def _dataset(root) -> CocoPanopticDataset:
    # No resize: processed size == original size, so exact masks stay exact.
    ann = root / "annotations" / "panoptic_val.json"
    return CocoPanopticDataset(root / "val", ann)


def fake_outputs(ds: CocoPanopticDataset, index: int, noise: bool) -> tuple[dict, object]:
    """One image's batch and outputs: a query per ground-truth segment (label 10 logits above
    the rest, mask logits +-8); with ``noise`` (a function of the image id) masks shifted by up
    to 3 px, one segment missed and one false rectangle added."""
    batch = collate([ds[index]])
    target = batch.targets[0]
    gt = ds.ground_truth(int(target["image_id"]))
    label = {c: i for i, c in enumerate(ds.label_to_category_id)}
    h, w = gt["ids"].shape
    logits = torch.full((Q, ds.num_classes + 1), -10.0)
    logits[:, -1] = 10.0  # no object
    masks = torch.full((Q, h, w), -8.0)
    gen = torch.Generator().manual_seed(int(target["image_id"]))
    segments = [s for s in gt["segments_info"] if not s["iscrowd"]][: Q - 1]
    if noise and segments:
        segments.pop(int(torch.randint(len(segments), (1,), generator=gen)))
    for k, seg in enumerate(segments):
        mask = gt["ids"] == seg["id"]
        if noise:
            dy, dx = (int(v) for v in torch.randint(-3, 4, (2,), generator=gen))
            mask = torch.roll(mask, (dy, dx), (0, 1))
        masks[k][mask] = 8.0
        logits[k, -1], logits[k, label[seg["category_id"]]] = -10.0, 10.0
    if noise:
        y, x = (int(v) for v in torch.randint(0, min(h, w) // 2, (2,), generator=gen))
        masks[Q - 1, y : y + 20, x : x + 20] = 9.0
        logits[Q - 1, -1] = -10.0
        logits[Q - 1, int(torch.randint(ds.num_classes, (1,), generator=gen))] = 10.0
    return {"pred_logits": logits[None], "pred_masks": masks[None]}, batch


def _update(evaluator: PanopticEvaluator, ds, indices, noise: bool = True) -> None:
    for i in indices:
        outputs, batch = fake_outputs(ds, i, noise)
        evaluator.update(outputs, batch.pixel_values, batch.targets, ds)


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return generate_shapes_dataset(tmp_path_factory.mktemp("pq") / "shapes", train=1, val=5)


def test_perfect_predictions_score_one(shapes_root) -> None:
    ds = _dataset(shapes_root)
    evaluator = _evaluator()
    _update(evaluator, ds, range(len(ds)), noise=False)
    values = evaluator.compute()
    assert {k: values[k] for k in PQ_KEYS} == {k: 1.0 for k in PQ_KEYS}
    assert values["segm_AP"] == pytest.approx(1.0) and values["segm_AP50"] == pytest.approx(1.0)
    seen = {s["category_id"] for image_id in ds.image_ids
            for s in ds.ground_truth(image_id)["segments_info"] if not s["iscrowd"]}  # fmt: skip
    assert {c for c, v in evaluator.per_class.items() if v["PQ"] == 1.0} == seen
    assert all(v["PQ"] == -1.0 for c, v in evaluator.per_class.items() if c not in seen)
    assert evaluator.compute() == {} and evaluator.per_class == {}  # reset after compute


def test_a_batch_padded_beyond_its_images_still_scores_one(shapes_root) -> None:
    # pad_to_multiple: the canvas (pixel_values) is larger than every image; the masks lie at
    # its top-left, so they must be cut at the image size, not resized from the whole canvas
    ds = _dataset(shapes_root)
    evaluator = _evaluator()
    for i in range(2):
        outputs, batch = fake_outputs(ds, i, noise=False)
        outputs["pred_masks"] = torch.nn.functional.pad(
            outputs["pred_masks"], (0, 24, 0, 16), value=-8.0
        )
        pixel_values = torch.nn.functional.pad(batch.pixel_values, (0, 24, 0, 16))
        evaluator.update(outputs, pixel_values, batch.targets, ds)
    values = evaluator.compute()
    assert {k: values[k] for k in PQ_KEYS} == {k: 1.0 for k in PQ_KEYS}
    assert values["segm_AP"] == pytest.approx(1.0)


def test_per_image_pq_equals_panopticapi_and_counts_a_repeat_once(shapes_root) -> None:
    ds = _dataset(shapes_root)
    evaluator, reference = _evaluator(), PanopticQualityMetric(ds.categories)
    _update(evaluator, ds, [*range(len(ds)), len(ds) - 1])  # the last image twice (DDP padding)
    for i in range(len(ds)):  # the same predictions through panopticapi's definition
        outputs, batch = fake_outputs(ds, i, noise=True)
        result = PostProcessPanoptic(ds.is_thing, threshold=0.5, min_area=1)(
            outputs, [batch.targets[0]["size"].tolist()]
        )[0]
        info = [dict(s, category_id=ds.label_to_category_id[s["category_id"]])
                for s in result["segments_info"]]  # fmt: skip
        gt = ds.ground_truth(int(batch.targets[0]["image_id"]))
        reference.update({"ids": result["segment_map"], "segments_info": info}, gt)
    values, expected = evaluator.compute(), reference.compute()
    assert 0.2 < values["PQ"] < 0.95  # noisy: neither trivial nor perfect
    assert {k: values[k] for k in PQ_KEYS} == pytest.approx(expected, abs=1e-12)
    assert 0.0 < values["segm_AP"] < 1.0


def _ddp_worker(rank: int, init_file: str, root: str, out: torch.Tensor) -> None:

    from torch.utils.data import DistributedSampler

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    ds = _dataset(Path(root))
    evaluator = _evaluator()
    # What Lightning does: a padded shard per rank (5 images: rank 1 repeats one).
    _update(evaluator, ds, list(DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=False)))
    values = evaluator.compute()
    out[rank] = torch.tensor([values[k] for k in (*PQ_KEYS, "segm_AP", "segm_AP50")],
                             dtype=torch.float64)  # fmt: skip
    dist.destroy_process_group()


def test_two_process_gloo_evaluation_equals_single_process(shapes_root, tmp_path) -> None:
    out = torch.zeros(2, len(PQ_KEYS) + 2, dtype=torch.float64).share_memory_()
    args = (str(tmp_path / "init"), str(shapes_root), out)
    mp.start_processes(_ddp_worker, args=args, nprocs=2, start_method=start_method())
    single = _evaluator()
    _update(single, _dataset(shapes_root), range(5))
    values = single.compute()
    expected = [values[k] for k in (*PQ_KEYS, "segm_AP", "segm_AP50")]
    assert torch.equal(out[0], out[1])
    assert out[0].tolist() == expected  # exactly, not approximately


def test_image_metric_rows_survive_images_without_segments() -> None:
    metric = ImagePanopticQuality()
    cats = [{"id": 1, "isthing": 1}, {"id": 2, "isthing": 0}]
    empty = {"ids": torch.zeros(4, 4, dtype=torch.long), "segments_info": []}
    metric.update(empty, empty, 7, cats)
    assert metric.compute() == {k: 0.0 for k in PQ_KEYS}


def _square_on_stuff() -> dict:
    """A 4x8 ground truth: thing segment 1 (category 1) on the first two columns (8 px), stuff
    segment 2 (category 2) on the other 24."""
    ids = torch.full((4, 8), 2, dtype=torch.long)
    ids[:, :2] = 1
    return {"ids": ids, "segments_info": [{"id": 1, "category_id": 1},
                                          {"id": 2, "category_id": 2}]}  # fmt: skip


def test_per_class_pq_by_hand_with_undefined_categories_at_minus_one() -> None:
    """Two 4x8 images, categories 1 (thing), 2 (stuff), 3 (thing, never seen):
    image 1: gt cat-1 square of 8 px, predicted on 6 of its px plus 0 more (IoU 6/8 = 0.75, tp);
    gt stuff cat-2 on the other 24 px, predicted as cat 1 (fn for 2, fp for 1).
    image 2: gt cat-2 everywhere, predicted exactly (tp, IoU 1).
    cat 1: tp 1, fp 1, fn 0 -> PQ 0.75 / 1.5 = 0.5, SQ 0.75, RQ 2/3;
    cat 2: tp 1, fp 0, fn 1 -> PQ 1 / 1.5 = 2/3, SQ 1, RQ 2/3; cat 3: -1 (undefined)."""
    cats = [{"id": 1, "isthing": 1}, {"id": 2, "isthing": 0}, {"id": 3, "isthing": 1}]
    gt1 = _square_on_stuff()
    pred_ids = torch.full((4, 8), 0, dtype=torch.long)
    pred_ids[1:, :2] = 1  # 6 of the square's 8 px
    pred_ids[:, 2:] = 2
    pred1 = {"ids": pred_ids, "segments_info": [{"id": 1, "category_id": 1},
                                                {"id": 2, "category_id": 1}]}  # fmt: skip
    whole = {"ids": torch.full((4, 8), 5, dtype=torch.long),
             "segments_info": [{"id": 5, "category_id": 2}]}  # fmt: skip
    metric = ImagePanopticQuality()
    metric.update(pred1, gt1, 1, cats)
    metric.update(whole, whole, 2, cats)
    summary = metric.compute()
    per_class = metric.per_class
    assert per_class[1] == pytest.approx(
        {"PQ": 0.5, "SQ": 0.75, "RQ": 2 / 3, "tp": 1, "fp": 1, "fn": 0, "isthing": True}
    )
    assert per_class[2] == pytest.approx(
        {"PQ": 2 / 3, "SQ": 1.0, "RQ": 2 / 3, "tp": 1, "fp": 0, "fn": 1, "isthing": False}
    )
    assert per_class[3] == {"PQ": -1.0, "SQ": -1.0, "RQ": -1.0, "tp": 0, "fp": 0, "fn": 0,
                            "isthing": True}  # fmt: skip
    # the summary means skip the undefined category
    assert summary["PQ"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert summary["PQ_th"] == pytest.approx(0.5) and summary["PQ_st"] == pytest.approx(2 / 3)


def test_a_category_in_the_ground_truth_never_predicted_scores_zero_not_undefined() -> None:
    """One 4x8 image: gt thing cat-1 on 8 px, stuff cat-2 on the other 24; the prediction is
    cat 2 everywhere (IoU 24 / 32 = 0.75 with the stuff: tp). Cat 1 has a missed segment (fn
    1): PQ 0, counted in the means, not -1 (undefined is only for no segment at all)."""
    cats = [{"id": 1, "isthing": 1}, {"id": 2, "isthing": 0}]
    gt = _square_on_stuff()
    pred = {"ids": torch.full((4, 8), 5, dtype=torch.long),
            "segments_info": [{"id": 5, "category_id": 2}]}  # fmt: skip
    metric = ImagePanopticQuality()
    metric.update(pred, gt, 1, cats)
    summary = metric.compute()
    assert metric.per_class[1] == {"PQ": 0.0, "SQ": 0.0, "RQ": 0.0, "tp": 0, "fp": 0, "fn": 1,
                                   "isthing": True}  # fmt: skip
    assert metric.per_class[2] == pytest.approx(
        {"PQ": 0.75, "SQ": 0.75, "RQ": 1.0, "tp": 1, "fp": 0, "fn": 0, "isthing": False}
    )
    assert summary["PQ"] == pytest.approx((0.0 + 0.75) / 2) and summary["PQ_th"] == 0.0


def test_pq_table_layout() -> None:
    metrics = dict(zip(PQ_KEYS, [0.5, 0.8, 0.625, 0.6, 0.9, 2 / 3, 0.4, 0.7, 4 / 7], strict=True))
    table = format_pq_table(metrics, title="t")
    lines = table.splitlines()
    assert lines[0] == "t" and lines[1].split("|")[1].split() == ["PQ", "SQ", "RQ"]
    assert lines[3].split("|")[1].split() == ["50.0", "80.0", "62.5"]
    assert lines[4].startswith("Things") and lines[5].startswith("Stuff")
    assert format_pq_table({"AP": 0.3}) == ""
    assert not math.isnan(float(lines[5].split()[-1]))


def test_pq_counts_a_category_with_id_zero():
    """-1 marks an image without segments; category id 0 is a real category (custom
    COCO-format data keep their ids). A perfect prediction of a category-0 segment: PQ = 1."""
    from detr_lightning.evaluation.panoptic_metrics import ImagePanopticQuality

    cats = [{"id": 0, "isthing": 1}, {"id": 1, "isthing": 0}]
    ids = torch.zeros(6, 6, dtype=torch.long)
    ids[1:4, 1:4] = 5
    image = {"ids": ids, "segments_info": [{"id": 5, "category_id": 0, "iscrowd": 0}]}
    metric = ImagePanopticQuality()
    metric.update(image, image, 1, cats)
    out = metric.compute()
    assert out["PQ"] == 1.0 and out["PQ_th"] == 1.0


def _evaluate_one_16px_image(segments, gt_ids, categories, logits, masks, **evaluator):
    """PQ and segm AP of one 16x16 image: ground truth ``gt_ids`` [16, 16] with
    ``segments`` (segments_info), ``categories`` (id, isthing; label i is the i-th), and the
    model's ``logits`` [1, Q, K] and ``masks`` [1, Q, 16, 16]."""
    from detr_lightning.evaluation.panoptic_evaluator import PanopticEvaluator

    gt = {"ids": gt_ids, "segments_info": segments}

    class Data:
        label_to_category_id = [c["id"] for c in categories]

        def __init__(self):
            self.categories = categories

        def ground_truth(self, image_id):
            return gt

    ev = PanopticEvaluator(
        functools.partial(PostProcessPanoptic, threshold=0.3, min_area=1),
        PostProcessSegm(),
        **evaluator,
    )
    target = {"image_id": torch.tensor(1), "size": torch.tensor([16, 16]),
              "orig_size": torch.tensor([16, 16])}  # fmt: skip
    ev.update(
        {"pred_logits": logits, "pred_masks": masks}, torch.zeros(1, 3, 16, 16), [target], Data()
    )
    return ev.compute()


def test_segm_ap_keeps_the_highest_scoring_thing_queries():
    """segm_top_k: 'segm AP keeps the best segm_top_k thing queries per image'. With top 1,
    a confident perfect mask (p ~ 1) beats a weak wrong one (p ~ 0.5): segm AP = 1."""
    gt_ids = torch.zeros(16, 16, dtype=torch.long)
    gt_ids[2:10, 2:10] = 7
    segments = [{"id": 7, "category_id": 1, "iscrowd": 0, "isthing": 1, "area": 64}]
    logits = torch.tensor([[[10.0, -10.0], [0.0, 0.0]]])  # query 0 sure, query 1 p = 0.5
    masks = torch.full((1, 2, 16, 16), -8.0)
    masks[0, 0, 2:10, 2:10] = 8.0  # perfect
    masks[0, 1, 11:15, 11:15] = 8.0  # elsewhere
    out = _evaluate_one_16px_image(segments, gt_ids, [{"id": 1, "isthing": 1}], logits, masks,
                                   segm_top_k=1)  # fmt: skip
    assert abs(out["segm_AP"] - 1.0) < 1e-6, out


def test_segm_ap_top_k_counts_thing_queries_only():
    """A stuff-labelled query, however confident, takes no place among the top-k candidates:
    with top 1, the thing query behind a surer stuff query is kept (segm AP 1, not 0)."""
    gt_ids = torch.zeros(16, 16, dtype=torch.long)
    gt_ids[2:10, 2:10] = 7
    gt_ids[12:, :] = 8
    segments = [{"id": 7, "category_id": 1, "iscrowd": 0, "isthing": 1, "area": 64},
                {"id": 8, "category_id": 2, "iscrowd": 0, "isthing": 0, "area": 64}]  # fmt: skip
    categories = [{"id": 1, "isthing": 1}, {"id": 2, "isthing": 0}]
    # query 0: the stuff class, surer than query 1's thing; labels 0 -> id 1, 1 -> id 2
    logits = torch.tensor([[[-10.0, 12.0, -10.0], [6.0, -10.0, -10.0]]])
    masks = torch.full((1, 2, 16, 16), -8.0)
    masks[0, 0, 12:, :] = 8.0
    masks[0, 1, 2:10, 2:10] = 8.0
    out = _evaluate_one_16px_image(segments, gt_ids, categories, logits, masks, segm_top_k=1)
    assert abs(out["segm_AP"] - 1.0) < 1e-6 and abs(out["PQ"] - 1.0) < 1e-6, out


def test_segm_ap_ignores_crowd_ground_truth():
    """COCO AP ignores crowd regions: a perfect prediction of the one non-crowd thing gives
    segm AP 1 even though a crowd thing segment is left unpredicted."""
    gt_ids = torch.zeros(16, 16, dtype=torch.long)
    gt_ids[2:10, 2:10] = 7
    gt_ids[11:15, 11:15] = 9
    segments = [{"id": 7, "category_id": 1, "iscrowd": 0, "isthing": 1, "area": 64},
                {"id": 9, "category_id": 1, "iscrowd": 1, "isthing": 1, "area": 16}]  # fmt: skip
    logits = torch.tensor([[[10.0, -10.0]]])
    masks = torch.full((1, 1, 16, 16), -8.0)
    masks[0, 0, 2:10, 2:10] = 8.0
    out = _evaluate_one_16px_image(segments, gt_ids, [{"id": 1, "isthing": 1}], logits, masks)
    assert abs(out["segm_AP"] - 1.0) < 1e-6


def test_an_unused_label_slot_forms_no_segment_and_lifts_no_other_score():
    """label_to_category_id [999, 1, 2, 3]: label 0 is a slot of no category (COCO's unused
    ids). q0 is thing segment 7's perfect mask with p(category 1) = 0.80, p(slot) = 0.10,
    p(no object) = 0.10: under 0.85, dropped as by the official rule (a softmax renormalised
    without the slot would give 0.89 and keep it). q1 is thing segment 9's perfect mask at 0.95.
    q2's best label is the slot: no segment. q3 is stuff (category 3) with mask logit 0
    everywhere, so it takes every pixel q1 does not: 256 - 36 = 220 px against its 184.
    By hand: category 1 FN 1 (PQ 0), 2 TP at IoU 1, 3 TP at IoU 184 / 220."""
    gt_ids = torch.full((16, 16), 11, dtype=torch.long)
    gt_ids[2:8, 2:8], gt_ids[10:16, 10:16] = 7, 9
    gt = {"ids": gt_ids, "segments_info": [
        {"id": 7, "category_id": 1, "iscrowd": 0, "isthing": 1, "area": 36},
        {"id": 9, "category_id": 2, "iscrowd": 0, "isthing": 1, "area": 36},
        {"id": 11, "category_id": 3, "iscrowd": 0, "isthing": 0, "area": 184},
    ]}  # fmt: skip

    class Data:
        categories = [{"id": 1, "isthing": 1}, {"id": 2, "isthing": 1}, {"id": 3, "isthing": 0}]
        label_to_category_id = [999, 1, 2, 3]

        def ground_truth(self, image_id):
            return gt

    probs = torch.tensor([[0.10, 0.80, 1e-9, 1e-9, 0.10], [0.02, 1e-9, 0.95, 1e-9, 0.03],
                          [0.95, 0.02, 0.02, 1e-9, 0.01], [1e-9, 1e-9, 1e-9, 0.99, 0.01]])  # fmt: skip
    masks = torch.full((1, 4, 16, 16), -8.0)
    masks[0, 0][gt_ids == 7], masks[0, 1][gt_ids == 9] = 8.0, 8.0
    masks[0, 2, :8, 8:], masks[0, 3] = 9.0, 0.0
    ev = PanopticEvaluator(functools.partial(PostProcessPanoptic, threshold=0.85, min_area=1))
    target = {"image_id": torch.tensor(1), "size": torch.tensor([16, 16]),
              "orig_size": torch.tensor([16, 16])}  # fmt: skip
    outputs = {"pred_logits": probs.log()[None], "pred_masks": masks}
    ev.update(outputs, torch.zeros(1, 3, 16, 16), [target], Data())
    out = ev.compute()
    assert out["PQ"] == pytest.approx((0 + 1 + 184 / 220) / 3), out
    assert out["RQ"] == pytest.approx(2 / 3) and out["PQ_th"] == pytest.approx(0.5), out
