"""MatchedPairs: per-set, per-image matches flattened into global indices."""

import pytest
import torch

from detr_lightning.detr.matched_pairs import MatchedPairs, sum_per_set


def _as_tensors(matches: list) -> list:
    return [
        [(torch.tensor(q, dtype=torch.int64), torch.tensor(t, dtype=torch.int64)) for q, t in m]
        for m in matches
    ]


def test_flattened_indices_by_hand() -> None:
    # 2 sets, 2 images holding 2 and 3 targets; set 1 matches fewer pairs in image 1.
    matches = _as_tensors([[([0, 4], [1, 0]), ([1, 2, 3], [2, 0, 1])], [([3], [0]), ([0], [2])]])
    pairs = MatchedPairs.of(matches, [2, 3], torch.device("cpu"))
    assert pairs.layer.tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert pairs.batch.tolist() == [0, 0, 1, 1, 1, 0, 1]
    assert pairs.query.tolist() == [0, 4, 1, 2, 3, 3, 0]
    # image 1's targets follow image 0's two in the concatenation
    assert pairs.target.tolist() == [1, 0, 4, 2, 3, 0, 4]
    assert pairs.sizes == [5, 2]
    batch, query = pairs.first_set()
    assert batch.tolist() == [0, 0, 1, 1, 1] and query.tolist() == [0, 4, 1, 2, 3]


def test_no_pairs_and_wrong_image_count() -> None:
    empty = [(torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))] * 2
    pairs = MatchedPairs.of([empty, empty], [0, 0], torch.device("cpu"))
    assert pairs.sizes == [0, 0] and pairs.query.numel() == 0
    assert sum_per_set(torch.zeros(0, 2), pairs.sizes).tolist() == [[0.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="expected 3 .* pairs per prediction set"):
        MatchedPairs.of([empty], [0, 0, 0], torch.device("cpu"))


def test_more_matches_than_images_is_the_clear_error() -> None:
    one = [(torch.tensor([0]), torch.tensor([0]))]
    with pytest.raises(ValueError, match="expected 2 .* pairs per prediction set"):
        MatchedPairs.of([one * 3], [1, 1], torch.device("cpu"))


def test_sum_per_set_equal_and_unequal_sizes() -> None:
    values = torch.arange(6.0)
    assert sum_per_set(values, [3, 3]).tolist() == [3.0, 12.0]
    assert sum_per_set(values, [1, 5]).tolist() == [0.0, 15.0]
    assert sum_per_set(values, [4, 0, 2]).tolist() == [6.0, 0.0, 9.0]
