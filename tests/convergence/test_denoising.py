"""Denoising / group query construction: noise ranges, bookkeeping and the attention mask."""

import levers
import torch

from detr_lightning.convergence.denoising import (
    Denoiser,
    make_denoising_queries,
    query_attention_mask,
)


def _targets():
    return [
        {
            "labels": torch.tensor([3, 1]),
            "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.05, 0.95, 0.1, 0.1]]),
        },
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},
        {
            "labels": torch.tensor([2, 0, 4]),
            "boxes": torch.rand(3, 2).mul(0.5).add(0.25).repeat(1, 2)
            * torch.tensor([1, 1, 0.5, 0.5]),
        },
    ]


def test_noised_boxes_stay_normalised_and_labels_in_range():
    gen = torch.Generator().manual_seed(0)
    targets = _targets()
    for _ in range(50):
        dn = make_denoising_queries(
            targets, num_classes=5, num_groups=4, label_noise=0.5, box_noise=1.0, generator=gen
        )
        assert dn.boxes.min() >= 0 and dn.boxes.max() <= 1
        assert (dn.boxes[..., 2:] > 0).all()
        assert dn.labels.min() >= 0 and dn.labels.max() < 5


def test_slots_point_at_their_targets():
    targets = _targets()
    dn = make_denoising_queries(
        targets, num_classes=5, num_groups=3, label_noise=0.0, box_noise=0.0
    )
    assert dn.pad == 3 and dn.num_queries == 9
    # Image 0 has 2 targets: slots 0,1 | 3,4 | 6,7 are real, 2, 5, 8 are padding.
    assert dn.valid[0].tolist() == [True, True, False] * 3
    assert not dn.valid[1].any()
    assert dn.valid[2].all()
    # Without noise every real slot reproduces its target exactly.
    for b, target in enumerate(targets):
        query_idx, target_idx = dn.matching_indices()[b]
        assert torch.equal(dn.labels[b, query_idx], target["labels"][target_idx])
        assert torch.allclose(dn.boxes[b, query_idx], target["boxes"][target_idx])
        assert len(query_idx) == 3 * len(target["labels"])
    assert dn.matching_indices()[0][1].tolist() == [0, 1, 0, 1, 0, 1]


def _noised(box: list[float], groups: int, box_noise: float, seed: int) -> torch.Tensor:
    """[groups, 4] noised copies (cxcywh) of one box of class 0."""
    targets = [{"labels": torch.tensor([0]), "boxes": torch.tensor([box])}]
    gen = torch.Generator().manual_seed(seed)
    dn = make_denoising_queries(
        targets, num_classes=1, num_groups=groups, box_noise=box_noise, generator=gen
    )
    return dn.boxes[0]


def test_box_noise_bounds_match_dn_detr_definition():
    noised = _noised([0.5, 0.5, 0.2, 0.4], groups=1000, box_noise=0.4, seed=1)
    # centre shift at most lambda * side / 2, side scale within [1 - lambda, 1 + lambda]
    assert (noised[:, 0] - 0.5).abs().max() <= 0.4 * 0.2 / 2 + 1e-6
    assert (noised[:, 1] - 0.5).abs().max() <= 0.4 * 0.4 / 2 + 1e-6
    assert noised[:, 2].min() >= 0.2 * 0.6 - 1e-6 and noised[:, 2].max() <= 0.2 * 1.4 + 1e-6
    # uniform draws: 1000 of them come within 10 % of each bound (a halved range would not)
    assert noised[:, 2].max() >= 0.2 * (1 + 0.9 * 0.4)
    assert noised[:, 2].min() <= 0.2 * (1 - 0.9 * 0.4)
    assert noised[:, 3].max() >= 0.4 * (1 + 0.9 * 0.4)
    assert (noised[:, 0] - 0.5).abs().max() >= 0.9 * 0.4 * 0.2 / 2
    assert (noised[:, 1] - 0.5).abs().max() >= 0.9 * 0.4 * 0.4 / 2
    assert (noised[:, 3] - 0.4).abs().max() > 0.05  # noise is actually applied


def test_no_targets_means_no_denoising_queries():
    empty = [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}] * 2
    assert make_denoising_queries(empty, num_classes=3) is None


def test_attention_mask_on_hand_built_layout():
    # 2 dn groups of 2 slots, then 2 matching groups of 3 queries: N = 4 + 6 = 10.
    mask = query_attention_mask(num_queries=3, num_query_groups=2, dn_groups=2, dn_pad=2)
    allowed = ~mask
    expected = torch.zeros(10, 10, dtype=torch.bool)
    expected[0:2, 0:2] = True  # dn group 0 sees itself
    expected[2:4, 2:4] = True  # dn group 1 sees itself
    expected[0:4, 4:7] = True  # dn queries may read matching group 0
    expected[4:7, 4:7] = True  # matching group 0
    expected[7:10, 7:10] = True  # matching group 1
    assert torch.equal(allowed, expected)
    # The key property: no matching query can see any denoising query.
    assert mask[4:, :4].all()


def test_plain_detr_needs_no_mask():
    assert query_attention_mask(num_queries=5) is None
    only_groups = query_attention_mask(num_queries=2, num_query_groups=3)
    assert only_groups.shape == (6, 6)
    assert torch.equal(~only_groups, torch.block_diag(*[torch.ones(2, 2, dtype=torch.bool)] * 3))


def test_a_compiled_network_samples_the_noise_outside_its_graph():
    """Under ``model.compile`` with dynamic sizes the target counts are symbolic, and Dynamo
    cannot trace ``torch.rand`` over a symbolic shape: the builder runs eagerly, and the
    compiled caller still gets noise of the batch's size."""
    torch._dynamo.reset()

    @torch.compile(dynamic=True, backend="eager")
    def noised(targets):
        dn = make_denoising_queries(targets, num_classes=5, num_groups=2)
        return dn.boxes * 1.0, dn.valid

    for counts in ((2, 3), (4, 1), (5, 6)):
        targets = [{"labels": torch.zeros(n, dtype=torch.int64), "boxes": torch.full((n, 4), 0.5)}
                   for n in counts]  # fmt: skip
        boxes, valid = noised(targets)
        assert boxes.shape == (2, 2 * max(counts), 4)
        assert valid.sum(1).tolist() == [2 * n for n in counts]


def test_denoising_padding_slots_keep_label_zero_under_full_label_noise():
    """Docstring: labels are '0 on padding slots'. With label_noise=1 every real label is
    redrawn, but padding slots (image 0 has 1 target, pad = 3) must stay 0."""
    targets = [
        {"labels": torch.tensor([2]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])},
        {"labels": torch.tensor([1, 1, 1]), "boxes": torch.full((3, 4), 0.3)},
    ]
    gen = torch.Generator().manual_seed(0)
    dn = make_denoising_queries(
        targets, num_classes=50, num_groups=4, label_noise=1.0, box_noise=0.0, generator=gen
    )
    assert (dn.labels[~dn.valid] == 0).all()
    assert (~dn.valid).sum() == 4 * 2  # 2 padding slots per group in image 0


def test_denoiser_accepts_zero_box_noise():
    """The message says 'box_noise >= 0': label-only denoising (box_noise=0) is allowed."""
    den = Denoiser(levers.dims(), groups=2, label_noise=0.5, box_noise=0.0)
    assert den.box_noise == 0.0


def test_noised_sides_keep_the_minimum_of_1e3():
    # lambda = 1 scales a side by [0, 2]: a 0.01 side often drops under 1e-3, clamped to 1e-3
    # (the documented minimum that keeps inverse-sigmoid finite)
    sides = _noised([0.5, 0.5, 0.01, 0.01], groups=500, box_noise=1.0, seed=3)[:, 2:]
    assert sides.min().item() >= 1e-3 - 1e-9
    assert (sides <= 1e-3 + 1e-9).sum() > 0  # the clamp was actually needed
