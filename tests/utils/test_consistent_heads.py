"""One class scoring for every part of a model: instances built apart (one per interpolation)
agree when their class and settings do."""

from types import SimpleNamespace

import pytest

from detr_lightning.utils.consistent_heads import check_consistent_heads


class _OwnScoring:  # a user's scoring: no __repr__, settings in attributes
    def __init__(self, gamma: float = 2.0) -> None:
        self.gamma = gamma


def _parts(*scorings):
    net, matcher, criterion, postprocess = (SimpleNamespace(scoring=s) for s in scorings)
    criterion.matcher = matcher
    return net, criterion, postprocess


def test_separate_instances_with_the_same_settings_agree() -> None:
    check_consistent_heads(*_parts(_OwnScoring(), _OwnScoring(), _OwnScoring(), _OwnScoring()))


def test_a_part_with_other_settings_is_named() -> None:
    parts = _parts(_OwnScoring(), _OwnScoring(), _OwnScoring(), _OwnScoring(gamma=1.0))
    with pytest.raises(ValueError, match="model.postprocess.scoring=.*cls_loss=focal"):
        check_consistent_heads(*parts)
