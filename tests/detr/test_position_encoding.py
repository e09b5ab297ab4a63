"""Sine and learned position encodings against hand-computed values."""

import math

import pytest
import torch

from detr_lightning.detr.position_encoding import (
    PositionEmbeddingLearned,
    PositionEmbeddingSine,
    build_position_encoding,
)


def _expected_sine(coord: float, num_feats: int, temperature: float = 10000.0) -> list[float]:
    # Channel k uses frequency temperature ** (2 * floor(k / 2) / num_feats); even k -> sin, odd -> cos.
    out = []
    for k in range(num_feats):
        angle = coord / temperature ** (2 * (k // 2) / num_feats)
        out.append(math.sin(angle) if k % 2 == 0 else math.cos(angle))
    return out


def test_sine_matches_hand_computed_values_on_padded_mask() -> None:
    # 2x3 real region inside a 3x4 map: one padded row at the bottom, one padded column right.
    mask = torch.zeros(1, 3, 4, dtype=torch.bool)
    mask[0, :2, :3] = True
    feats = 4
    pos = PositionEmbeddingSine(num_pos_feats=feats)(mask)
    assert pos.shape == (1, 2 * feats, 3, 4)
    eps = 1e-6
    for i in range(2):
        for j in range(3):
            y = (i + 1) / (2 + eps) * 2 * math.pi
            x = (j + 1) / (3 + eps) * 2 * math.pi
            expected = torch.tensor(_expected_sine(y, feats) + _expected_sine(x, feats))
            torch.testing.assert_close(pos[0, :, i, j], expected, atol=1e-5, rtol=0)


def test_sine_real_positions_do_not_depend_on_padding() -> None:
    small = torch.ones(1, 5, 7, dtype=torch.bool)
    padded = torch.zeros(1, 9, 12, dtype=torch.bool)
    padded[0, :5, :7] = True
    enc = PositionEmbeddingSine(num_pos_feats=16)
    torch.testing.assert_close(enc(padded)[..., :5, :7], enc(small))


def test_sine_without_normalisation_uses_raw_counts() -> None:
    mask = torch.ones(1, 2, 3, dtype=torch.bool)
    pos = PositionEmbeddingSine(num_pos_feats=4, temperature=100.0, normalize=False)(mask)
    # Position (row 1, col 2): y count 2, x count 3.
    expected = torch.tensor(_expected_sine(2.0, 4, 100.0) + _expected_sine(3.0, 4, 100.0))
    torch.testing.assert_close(pos[0, :, 1, 2], expected, atol=1e-6, rtol=0)


def test_sine_rejects_scale_without_normalize() -> None:
    with pytest.raises(ValueError, match="normalize"):
        PositionEmbeddingSine(normalize=False, scale=1.0)


def test_learned_layout_is_columns_then_rows() -> None:
    enc = PositionEmbeddingLearned(num_pos_feats=6)
    pos = enc(torch.ones(2, 3, 4, dtype=torch.bool))
    assert pos.shape == (2, 12, 3, 4)
    for i in range(3):
        for j in range(4):
            torch.testing.assert_close(pos[1, :6, i, j], enc.col_embed.weight[j])
            torch.testing.assert_close(pos[1, 6:, i, j], enc.row_embed.weight[i])


def test_learned_rejects_maps_larger_than_its_table() -> None:
    with pytest.raises(ValueError, match="51"):
        PositionEmbeddingLearned(8)(torch.ones(1, 51, 4, dtype=torch.bool))


def test_learned_rejects_maps_wider_than_its_table() -> None:
    # the column table has 50 rows too: a 4x51 map is the same clear error, not an IndexError
    with pytest.raises(ValueError, match="4x51"):
        PositionEmbeddingLearned(8)(torch.ones(1, 4, 51, dtype=torch.bool))


def test_build_position_encoding() -> None:
    sine = build_position_encoding("sine", hidden_dim=64)
    assert isinstance(sine, PositionEmbeddingSine) and sine.num_pos_feats == 32
    learned = build_position_encoding("learned", hidden_dim=64)
    assert learned.row_embed.weight.shape == (50, 32)
    with pytest.raises(ValueError, match="sine"):
        build_position_encoding("cosine")
