"""PostProcess on hand-made outputs: absolute xyxy boxes, best real class, top-k, threshold."""

import math

import pytest
import torch

from detr_lightning.convergence.focal_scoring import FocalScoring
from detr_lightning.detr.postprocess import PostProcess


def _softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def _outputs():
    """B=1, Q=3, 2 real classes + no-object. Query 1's top class is no-object."""
    logits = torch.tensor([[[1.0, 3.0, 0.0], [2.0, 0.0, 5.0], [0.5, 0.0, 0.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.25, 0.5, 0.5, 1.0], [0.1, 0.2, 0.2, 0.2]]])
    return {"pred_logits": logits, "pred_boxes": boxes}


# target size (h=100, w=200): x scales by 200, y by 100
EXPECTED_BOXES = [[80.0, 30.0, 120.0, 70.0], [0.0, 0.0, 100.0, 100.0], [0.0, 10.0, 40.0, 30.0]]
EXPECTED_SCORES = [
    _softmax([1.0, 3.0, 0.0])[1],
    _softmax([2.0, 0.0, 5.0])[0],
    _softmax([0.5, 0.0, 0.0])[0],
]


def test_scores_labels_and_absolute_boxes():
    (res,) = PostProcess()(_outputs(), torch.tensor([[100, 200]]))
    assert res["labels"].tolist() == [1, 0, 0]  # query 1 reports its best real class, not 2
    assert res["labels"].dtype == torch.int64
    assert res["scores"].tolist() == pytest.approx(EXPECTED_SCORES, abs=1e-6)
    assert res["boxes"].tolist() == [pytest.approx(b, abs=1e-4) for b in EXPECTED_BOXES]


def test_top_k_and_threshold():
    order = sorted(range(3), key=lambda q: -EXPECTED_SCORES[q])
    (res,) = PostProcess(top_k=2)(_outputs(), torch.tensor([[100, 200]]))
    assert res["scores"].tolist() == pytest.approx([EXPECTED_SCORES[q] for q in order[:2]])
    assert res["boxes"].tolist() == [pytest.approx(EXPECTED_BOXES[q], abs=1e-4) for q in order[:2]]
    threshold = 0.1  # between query 1's score (~0.05) and the others
    (res,) = PostProcess(score_threshold=threshold)(_outputs(), torch.tensor([[100, 200]]))
    kept = [q for q in range(3) if EXPECTED_SCORES[q] >= threshold]
    assert kept == [0, 2]
    assert res["scores"].tolist() == pytest.approx([EXPECTED_SCORES[q] for q in kept])
    assert res["labels"].tolist() == [1, 0]


def test_per_image_sizes():
    out = {k: v.repeat(2, 1, 1) for k, v in _outputs().items()}
    res = PostProcess()(out, torch.tensor([[100, 200], [50, 10]]))
    assert res[1]["boxes"][0].tolist() == pytest.approx([4.0, 15.0, 6.0, 35.0], abs=1e-5)
    assert res[0]["boxes"][0].tolist() == pytest.approx(EXPECTED_BOXES[0], abs=1e-4)


def test_focal_top_k_over_query_class_pairs():
    # Q=2, C=3 sigmoid logits; the 3 best (query, class) pairs by hand: (1,2), (0,0), (1,0)
    logits = torch.tensor([[[2.0, -1.0, 0.0], [1.0, -3.0, 3.0]]])
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.25, 0.25, 0.5, 0.5]]])
    out = {"pred_logits": logits, "pred_boxes": boxes}
    (res,) = PostProcess(top_k=3, scoring=FocalScoring())(out, torch.tensor([[10, 10]]))

    def sig(x):
        return 1 / (1 + math.exp(-x))

    assert res["scores"].tolist() == pytest.approx([sig(3.0), sig(2.0), sig(1.0)])
    assert res["labels"].tolist() == [2, 0, 0]
    q0, q1 = [4.0, 4.0, 6.0, 6.0], [0.0, 0.0, 5.0, 5.0]
    assert res["boxes"].tolist() == [pytest.approx(b, abs=1e-5) for b in (q1, q0, q1)]
    (default,) = PostProcess(scoring=FocalScoring())(out, torch.tensor([[10, 10]]))
    assert len(default["scores"]) == 2  # top_k defaults to Q
    (cut,) = PostProcess(scoring=FocalScoring(), score_threshold=0.8)(out, torch.tensor([[10, 10]]))
    assert cut["labels"].tolist() == [2, 0]  # sig(3)=0.95, sig(2)=0.88 >= 0.8 > sig(1)=0.73


def test_bad_target_sizes_is_a_clear_error():
    with pytest.raises(ValueError, match="orig_size"):
        PostProcess()(_outputs(), torch.tensor([100, 200]))
    with pytest.raises(ValueError, match="top_k"):
        PostProcess(top_k=0)


@pytest.mark.parametrize("focal", [False, True])
def test_a_score_equal_to_the_threshold_is_kept(focal) -> None:
    # documented: detections with score < score_threshold are dropped, so 0.5 stays at 0.5
    logits = torch.tensor([[[0.0, -30.0]]]) if focal else torch.tensor([[[0.0, 0.0, -math.inf]]])
    out = {"pred_logits": logits, "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2]]])}
    scoring = FocalScoring() if focal else None
    (res,) = PostProcess(score_threshold=0.5, scoring=scoring)(out, torch.tensor([[10, 10]]))
    assert res["scores"].tolist() == [0.5]
