"""PostProcessPanoptic / PostProcessSegm invariants on hand-made outputs."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from detr_lightning.postprocess import PostProcess, PostProcessPanoptic, PostProcessSegm

# labels 0, 1: things; 2, 3: stuff
IS_THING = {0: True, 1: True, 2: False, 3: False}
SURE, UNSURE = 8.0, 1.0  # class logits: ~0.999 vs ~0.4 probability (5 columns)


def _logits(rows: list[tuple[int, float]]) -> torch.Tensor:
    """One [Q, 5] logits row per (label, strength); the last column is "no object"."""
    out = torch.zeros(len(rows), 5)
    for q, (label, strength) in enumerate(rows):
        out[q, label] = strength
    return out


def _regions(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> torch.Tensor:
    """[Q, h, w] logits: +5 inside each query's (y0, y1, x0, x1) region, -5 elsewhere."""
    masks = torch.full((len(boxes), *shape), -5.0)
    for q, (y0, y1, x0, x1) in enumerate(boxes):
        masks[q, y0:y1, x0:x1] = 5.0
    return masks


def _check_partition(result: dict) -> None:
    seg, info = result["segment_map"], result["segments_info"]
    ids = [s["id"] for s in info]
    assert len(set(ids)) == len(ids) and all(i >= 1 for i in ids)
    assert set(seg.unique().tolist()) <= {0, *ids}
    for s in info:  # one id per pixel, so the areas are the id map's counts
        assert s["area"] == int((seg == s["id"]).sum())


def test_threshold_stuff_merge_and_partition() -> None:
    # q0 thing 0 top-left; q1, q2 stuff 2 (two regions); q3 below threshold; q4 stuff 3
    logits = _logits([(0, SURE), (2, SURE), (2, SURE), (1, UNSURE), (3, SURE)])
    masks = _regions((8, 8), [(0, 4, 0, 4), (0, 4, 4, 8), (4, 8, 0, 4), (0, 8, 0, 8), (4, 8, 4, 8)])
    masks[3] = 50.0  # the unsure query would win every pixel if it were kept
    out = PostProcessPanoptic(IS_THING)({"pred_logits": logits[None], "pred_masks": masks[None]},
                                        torch.tensor([[8, 8]]))[0]  # fmt: skip
    _check_partition(out)
    info = out["segments_info"]
    assert [(s["category_id"], s["isthing"], s["area"]) for s in info] == [
        (0, True, 16), (2, False, 32), (3, False, 16),
    ]  # fmt: skip
    assert [s["id"] for s in info] == [1, 2, 3]
    seg = out["segment_map"]
    assert seg.dtype == torch.long and (seg != 0).all()
    assert (seg[:4, 4:] == 2).all() and (seg[4:, :4] == 2).all()  # one merged stuff segment


def test_tiny_segments_are_removed_and_stuff_stays_merged() -> None:
    # q0 (thing) wins 2 pixels only; q1/q2 stuff 2 with one region each; q3 thing 1
    logits = _logits([(0, SURE), (2, SURE), (2, SURE), (1, SURE)])
    masks = _regions((8, 8), [(0, 1, 0, 2), (0, 4, 0, 8), (4, 8, 0, 4), (4, 8, 4, 8)])
    masks[1, 0, :2] = 4.0  # q0 beats q1 on its 2 pixels
    out = PostProcessPanoptic(IS_THING, min_area=5)(
        {"pred_logits": logits[None], "pred_masks": masks[None]}, torch.tensor([[8, 8]])
    )[0]
    _check_partition(out)
    info = out["segments_info"]
    # the tiny thing is gone and its pixels went to the stuff query next in line; the stuff
    # segment is still one segment after the second pass
    assert [(s["id"], s["category_id"], s["area"]) for s in info] == [(1, 2, 48), (2, 1, 16)]
    assert (out["segment_map"][:4] == 1).all() and (out["segment_map"][4:, :4] == 1).all()


def test_small_stuff_segment_is_dropped_whole() -> None:
    logits = _logits([(2, SURE), (2, SURE), (0, SURE)])
    masks = _regions((8, 8), [(0, 1, 0, 2), (0, 1, 2, 3), (0, 8, 0, 8)])
    masks[2, 0, :3] = 0.0  # q0/q1 win 3 pixels in all: below min_area as one segment too
    out = PostProcessPanoptic(IS_THING)(
        {"pred_logits": logits[None], "pred_masks": masks[None]}, torch.tensor([[8, 8]])
    )[0]
    assert [(s["id"], s["category_id"], s["area"]) for s in out["segments_info"]] == [(1, 0, 64)]


def test_nothing_kept_gives_void() -> None:
    logits = _logits([(0, UNSURE), (4, SURE)])  # unsure thing; a "no object" query
    out = PostProcessPanoptic(IS_THING, return_png=True)(
        {"pred_logits": logits[None], "pred_masks": torch.randn(1, 2, 4, 4)},
        torch.tensor([[16, 16]]),
        torch.tensor([[20, 30]]),
    )[0]
    assert out["segments_info"] == [] and out["segment_map"].shape == (20, 30)
    assert (out["segment_map"] == 0).all()
    assert np.asarray(Image.open(io.BytesIO(out["png_string"]))).max() == 0


def test_padding_is_cut_and_output_is_at_the_original_size() -> None:
    # canvas 8x8 (the other image); this image is 4x8 (top half); q1 wins only on padding
    logits = _logits([(0, SURE), (1, SURE)])
    masks = _regions((8, 8), [(0, 4, 0, 8), (4, 8, 0, 8)])
    batch = {"pred_logits": torch.stack([logits, logits]), "pred_masks": torch.stack([masks] * 2)}
    results = PostProcessPanoptic(IS_THING, return_png=True)(
        batch, torch.tensor([[4, 8], [8, 8]]), torch.tensor([[40, 80], [8, 8]])
    )
    first = results[0]
    assert first["segment_map"].shape == (40, 80)
    assert [(s["category_id"], s["area"]) for s in first["segments_info"]] == [(0, 3200)]
    assert [s["category_id"] for s in results[1]["segments_info"]] == [0, 1]
    png = np.asarray(Image.open(io.BytesIO(first["png_string"]))).astype(np.int64)
    ids = png[..., 0] + 256 * png[..., 1] + 256**2 * png[..., 2]
    assert (torch.from_numpy(ids) == first["segment_map"]).all()


def test_postprocess_segm_masks_at_the_original_size() -> None:
    # image 0 is 8x12 on a 16x16 canvas; its query 0 covers the left half of the image
    pred = torch.full((2, 2, 4, 4), -10.0)
    pred[0, 0, :2, :1] = 10.0  # canvas rows 0-7, columns 0-3 (4x upsampling)
    pred[0, 1, 2:, :] = 10.0  # only on padding for image 0
    outputs = {"pred_logits": torch.zeros(2, 2, 5), "pred_boxes": torch.rand(2, 2, 4),
               "pred_masks": pred}  # fmt: skip
    orig = torch.tensor([[16, 24], [30, 20]])
    sizes = torch.tensor([[8, 12], [16, 16]])
    results = PostProcess()(outputs, orig)
    results = PostProcessSegm()(results, outputs, orig, sizes)
    assert results[0]["masks"].shape == (2, 1, 16, 24) and results[0]["masks"].dtype == torch.uint8
    assert results[1]["masks"].shape == (2, 1, 30, 20)
    assert results[0]["masks"][1].sum() == 0  # padding never leaks into the image
    left = results[0]["masks"][0, 0]
    assert left[:, :6].all() and not left[:, 10:].any()  # ~4 canvas columns = 8 original


@pytest.mark.parametrize("canvas", [None, (16, 16)])
def test_postprocess_segm_threshold(canvas) -> None:
    pred = torch.tensor([0.0, 0.3, -0.3]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    outputs = {"pred_masks": pred}
    sizes = torch.tensor([[16, 16]])
    out = PostProcessSegm(threshold=0.5)([{}], outputs, sizes, sizes, canvas_size=canvas)[0]
    assert out["masks"].flatten(1).all(1).tolist() == [False, True, False]


def _two_queries(logits: list[list[float]], masks: torch.Tensor, **kwargs) -> dict:
    """Panoptic post-processing of one 4x4 image with two thing queries of a sigmoid head."""
    from detr_lightning.convergence.focal_scoring import FocalScoring

    out = {"pred_logits": torch.tensor(logits)[None], "pred_masks": masks[None]}
    return PostProcessPanoptic([True, True], scoring=FocalScoring(), **kwargs)(out, [(4, 4)])[0]


def test_the_class_threshold_is_strict() -> None:
    # query 0's probability is exactly the threshold (sigmoid(0) = 0.5): dropped, as official
    masks = torch.zeros(2, 4, 4)
    masks[0, :, :2], masks[1, :, 2:] = 5.0, 5.0
    res = _two_queries([[0.0, -30.0], [10.0, -30.0]], masks, threshold=0.5, min_area=1)
    assert [s["area"] for s in res["segments_info"]] == [16]


def test_a_segment_of_exactly_min_area_pixels_is_kept() -> None:
    masks = torch.zeros(2, 4, 4)
    masks[0].view(-1)[:5], masks[1].view(-1)[5:] = 5.0, 5.0
    res = _two_queries([[10.0, -30.0], [10.0, -30.0]], masks, threshold=0.5, min_area=5)
    assert sorted(s["area"] for s in res["segments_info"]) == [5, 11]


def _probability_logits(rows: list[list[float]]) -> torch.Tensor:
    """[1, Q, K] logits whose softmax is each row of probabilities."""
    return torch.tensor(rows).log()[None]


def test_a_query_whose_argmax_is_no_object_is_dropped_below_half() -> None:
    """The official rule: the best of all K columns must be a real class. At threshold 0.3,
    p(class 0) = 0.45 passes the threshold but "no object" (0.50) wins: no segment. A query
    where class 1 wins with 0.40 (no object 0.35) is kept."""
    masks = torch.zeros(2, 4, 4)
    masks[0, :, :2], masks[1, :, 2:] = 5.0, 5.0
    logits = _probability_logits([[0.45, 0.05, 0.0 + 1e-9, 1e-9, 0.50],
                                  [0.05, 0.40, 0.1, 0.1, 0.35]])  # fmt: skip
    out = PostProcessPanoptic(IS_THING, threshold=0.3, min_area=1)(
        {"pred_logits": logits, "pred_masks": masks[None]}, [(4, 4)]
    )[0]
    assert [(s["category_id"], s["area"]) for s in out["segments_info"]] == [(1, 16)]


def test_labels_left_out_of_the_thing_map_form_no_segment_and_renormalise_nothing() -> None:
    """Label 3 has no category (an unused COCO slot; left out of the map). Query 0's best label
    is 3: dropped. Query 1 has p(label 0) = 0.80 at threshold 0.85, with 0.10 on label 3:
    dropped too (renormalising without label 3 would give 0.89 and keep it). Query 2 (0.90)
    stays."""
    masks = torch.zeros(3, 6, 6)
    masks[0, :2], masks[1, 2:4], masks[2, 4:] = 5.0, 5.0, 5.0
    logits = _probability_logits([[0.02, 0.02, 0.02, 0.90, 0.04],
                                  [0.80, 0.00 + 1e-9, 0.00 + 1e-9, 0.10, 0.10],
                                  [0.90, 0.02, 0.02, 0.02, 0.04]])  # fmt: skip
    known = {0: True, 1: True, 2: False}
    out = PostProcessPanoptic(known, threshold=0.85, min_area=1)(
        {"pred_logits": logits, "pred_masks": masks[None]}, [(6, 6)]
    )[0]
    assert [(s["category_id"], s["area"]) for s in out["segments_info"]] == [(0, 36)]
    everything = PostProcessPanoptic({**known, 3: False}, threshold=0.85, min_area=1)(
        {"pred_logits": logits, "pred_masks": masks[None]}, [(6, 6)]
    )[0]  # the same outputs with label 3 a category: query 0 is a segment
    assert sorted(s["category_id"] for s in everything["segments_info"]) == [0, 3]


def test_default_canvas_is_the_largest_height_and_the_largest_width() -> None:
    # a 4x8 and a 6x4 image pad to a 6x8 canvas: the default must equal canvas_size=(6, 8)
    gen = torch.Generator().manual_seed(0)
    logits = _logits([(0, SURE), (1, SURE), (2, SURE)])
    batch = {
        "pred_logits": torch.stack([logits, logits]),
        "pred_masks": torch.randn(2, 3, 3, 4, generator=gen) * 5,
    }
    sizes = torch.tensor([[4, 8], [6, 4]])
    post = PostProcessPanoptic(IS_THING, min_area=1)
    default, explicit = post(batch, sizes), post(batch, sizes, canvas_size=(6, 8))
    for a, b in zip(default, explicit, strict=True):
        assert torch.equal(a["segment_map"], b["segment_map"])
        assert a["segments_info"] == b["segments_info"]


@pytest.mark.parametrize(("n_in", "n_out"), [(3, 5), (5, 3)])
def test_id_map_resize_is_nearest_exact(n_in: int, n_out: int) -> None:
    # each input pixel is its own segment (category = pixel index); output pixel d takes input
    # pixel floor((d + 0.5) * n_in / n_out) per axis (pixel centres; torch's "nearest-exact")
    masks = torch.eye(n_in * n_in).view(n_in * n_in, n_in, n_in) * 10
    labels = list(range(n_in * n_in))
    out = PostProcessPanoptic([True] * len(labels), min_area=1).segment(masks, labels, (n_out,) * 2)
    category = torch.tensor([0] + [s["category_id"] for s in out["segments_info"]])
    src = [(2 * d + 1) * n_in // (2 * n_out) for d in range(n_out)]
    expected = torch.tensor([[n_in * y + x for x in src] for y in src])
    assert torch.equal(category[out["segment_map"]], expected)


def test_default_class_threshold_is_the_officials_085() -> None:
    # p = 0.80 and 0.90 for thing class 0 (the rest on "no object"): only 0.90 clears 0.85
    logits = _probability_logits([[0.80, 0.0001, 0.0001, 0.0001, 0.1997],
                                  [0.90, 0.0001, 0.0001, 0.0001, 0.0997]])  # fmt: skip
    masks = torch.zeros(1, 2, 4, 4)
    masks[0, 0, :, :2], masks[0, 1, :, 2:] = 5.0, 5.0
    out = PostProcessPanoptic(IS_THING, min_area=1)(
        {"pred_logits": logits, "pred_masks": masks}, torch.tensor([[4, 4]])
    )[0]
    assert [(s["category_id"], s["area"]) for s in out["segments_info"]] == [(0, 16)]
