"""utils.lr: the lr scaling rules."""

from __future__ import annotations

import math

import pytest

from detr_lightning.utils.lr import lr_scale_factor


def test_lr_scale_factor_rules() -> None:
    assert lr_scale_factor(None, 8) == 1.0
    assert lr_scale_factor("linear", 8) == 8 / 64
    assert lr_scale_factor("sqrt", 16) == pytest.approx(math.sqrt(16 / 64))
    with pytest.raises(ValueError, match="lr_scaling"):
        lr_scale_factor("cubic", 8)
