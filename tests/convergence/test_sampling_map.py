"""sampling_map: the real share of a padded map (hand-computed), and the weight map of a read
(the deformable attention's output against it: tests/convergence/test_deformable_attention.py)."""

import torch

from detr_lightning.convergence.sampling_map import (
    onto_padded_map,
    sampling_weight_map,
    valid_ratios,
)


def test_valid_ratios_are_the_real_share_of_width_and_height() -> None:
    mask = torch.zeros(2, 4, 8, dtype=torch.bool)
    mask[0] = True
    mask[1, :3, :6] = True
    torch.testing.assert_close(valid_ratios(mask), torch.tensor([[[1.0, 1.0]], [[0.75, 0.75]]]))


def test_points_move_onto_the_padded_map_by_each_images_real_share() -> None:
    mask = torch.zeros(2, 4, 8, dtype=torch.bool)
    mask[0] = True
    mask[1, :2, :6] = True  # real: 6 of 8 columns, 2 of 4 rows
    points = torch.tensor([[1.0, 1.0], [0.5, 0.2]]).expand(2, 1, 1, 2, 2)  # [B, Q, H, P, 2]
    expected = torch.tensor([[[1.0, 1.0], [0.5, 0.2]], [[0.75, 0.5], [0.375, 0.1]]])
    torch.testing.assert_close(onto_padded_map(points, mask), expected.view(2, 1, 1, 2, 2))


def test_a_read_between_four_pixels_puts_its_bilinear_weights_on_them() -> None:
    """One head, two points: one between pixels (1, 0), (2, 0), (1, 1), (2, 1) of a 3 x 4 map,
    a quarter of a pixel right of and below (1, 0)'s centre, weight 0.8; one outside, 0.2."""
    locations = torch.tensor([[[[[1.75 / 4, 0.75 / 3], [1.5, 0.5]]]]])  # [1, 1, 1, 2, 2]
    weights = torch.tensor([[[[0.8, 0.2]]]])
    dense = sampling_weight_map(locations, weights, 3, 4).view(3, 4)
    expected = torch.zeros(3, 4)
    expected[0, 1], expected[0, 2] = 0.8 * 0.75 * 0.75, 0.8 * 0.25 * 0.75
    expected[1, 1], expected[1, 2] = 0.8 * 0.75 * 0.25, 0.8 * 0.25 * 0.25
    torch.testing.assert_close(dense, expected)
