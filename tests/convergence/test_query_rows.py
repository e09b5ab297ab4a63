import torch
from torch import nn

from detr_lightning.convergence.denoising import DenoisingQueries
from detr_lightning.convergence.queries import DecoderQueries
from detr_lightning.convergence.query_rows import prepend_denoising, split_outputs

B, Q, D, K = 2, 3, 8, 5


def dn_queries(groups: int = 2, pad: int = 1) -> DenoisingQueries:
    n = groups * pad
    return DenoisingQueries(
        labels=torch.tensor([[1] * n, [2] * n]), boxes=torch.full((B, n, 4), 0.5),
        valid=torch.ones(B, n, dtype=torch.bool), target_index=torch.zeros(B, n, dtype=torch.long),
        num_groups=groups, pad=pad,
    )  # fmt: skip


def test_dn_rows_go_in_front_and_their_prior_is_zero():
    queries = DecoderQueries(
        content=torch.randn(B, Q, D), position=None, reference=torch.rand(B, Q, 4),
        prior=torch.randn(B, Q, K),
    )  # fmt: skip
    denoiser = nn.Module()
    denoiser.label_embed = nn.Embedding(3, D)
    dn = dn_queries()
    content, position, reference, prior = prepend_denoising(queries, dn, denoiser, None, True)
    assert position is None and content.shape == (B, 2 + Q, D)
    torch.testing.assert_close(content[:, :2], denoiser.label_embed(dn.labels))
    torch.testing.assert_close(content[:, 2:], queries.content)
    torch.testing.assert_close(reference, torch.cat([dn.boxes, queries.reference], 1))
    assert prior[:, :2].abs().sum() == 0 and torch.equal(prior[:, 2:], queries.prior)


def test_without_reference_boxes_the_dn_boxes_become_positions():
    queries = DecoderQueries(content=torch.zeros(B, Q, D), position=torch.randn(B, Q, D))
    denoiser = nn.Module()
    denoiser.label_embed = nn.Embedding(3, D)
    head = nn.Linear(D, D)
    _, position, reference, _ = prepend_denoising(queries, dn_queries(), denoiser, head, True)
    assert reference is None and position.shape == (B, 2 + Q, D)
    torch.testing.assert_close(position[:, 2:], queries.position)


def test_a_batch_without_dn_queries_still_reaches_the_dn_weights_with_zero():
    queries = DecoderQueries(content=torch.randn(B, Q, D), position=torch.randn(B, Q, D))
    denoiser, head = nn.Embedding(3, D), nn.Linear(D, D)
    content, *_ = prepend_denoising(queries, None, denoiser, head, training=True)
    torch.testing.assert_close(content, queries.content)
    content.sum().backward()
    for p in (*denoiser.parameters(), *head.parameters()):
        assert p.grad is not None and p.grad.abs().sum() == 0
    evaluated, *_ = prepend_denoising(queries, None, denoiser, head, training=False)
    assert evaluated is queries.content  # nothing tied outside training


def test_the_outputs_are_cut_at_the_dn_and_group_boundaries():
    groups, dn = 2, dn_queries(groups=2, pad=1)
    n = dn.num_queries + groups * Q
    rows = torch.arange(n, dtype=torch.float)
    logits = rows.view(1, 1, n, 1).expand(6, B, n, K)
    boxes = rows.view(1, 1, n, 1).expand(6, B, n, 4)

    def last_layer(lg, bx):
        return {"pred_logits": lg[-1], "pred_boxes": bx[-1]}

    out = split_outputs(logits, boxes, Q, groups, dn, last_layer)
    assert out["pred_logits"][0, :, 0].tolist() == [2, 3, 4]  # group 0 after 2 dn rows
    assert out["group_outputs"][0]["pred_boxes"][1, :, 0].tolist() == [5, 6, 7]
    assert out["dn_outputs"]["pred_logits"][0, :, 0].tolist() == [0, 1]
    assert out["dn_queries"] is dn
    plain = split_outputs(logits[:, :, 2:5], boxes[:, :, 2:5], Q, 1, None, last_layer)
    assert set(plain) == {"pred_logits", "pred_boxes"}


def test_without_reference_boxes_the_dn_positions_encode_their_boxes():
    from detr_lightning.convergence.box_encoding import box_sine_embedding

    queries = DecoderQueries(content=torch.zeros(B, Q, D), position=torch.randn(B, Q, D))
    denoiser = nn.Module()
    denoiser.label_embed = nn.Embedding(3, D)
    head = nn.Linear(D, D)
    dn = dn_queries()
    dn.boxes[:, 0] = torch.tensor([0.2, 0.3, 0.1, 0.4])  # two distinct dn boxes per image
    _, position, _, _ = prepend_denoising(queries, dn, denoiser, head, True)
    torch.testing.assert_close(position[:, :2], head(box_sine_embedding(dn.boxes, D)))
