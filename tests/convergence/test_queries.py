"""Query sources: proposal queries' class prior only when asked, anchors spread over the image."""

from __future__ import annotations

import levers
import torch

from detr_lightning.convergence.proposals import EncoderProposals
from detr_lightning.convergence.queries import AnchorQueries, ProposalQueries
from detr_lightning.detr.set_detector import EncodedImage


def test_proposal_queries_give_no_prior_without_class_prior():
    torch.manual_seed(0)
    dims = levers.dims(num_queries=3)
    head = lambda d, n, s: EncoderProposals(d, n, scoring=s)  # noqa: E731
    mask = torch.ones(1, 2, 3, dtype=torch.bool)
    enc = EncodedImage(
        [(torch.zeros(1, 1, 2, 3), mask)], torch.randn(1, 6, 8), mask.flatten(1), None
    )
    off = ProposalQueries(dims, head, class_prior=False)(enc)
    on = ProposalQueries(dims, head, class_prior=True)(enc)
    assert off.prior is None
    assert on.prior is not None and on.prior.shape == (1, 3, 4)


def test_anchor_boxes_start_uniform_over_the_whole_image():
    """Docstring: anchors 'uniform in the image at initialisation': the sigmoid of the stored
    weights is U(0, 1), so 2000 samples reach below 0.05 and above 0.95."""
    torch.manual_seed(0)
    q = AnchorQueries(levers.dims(num_queries=500))
    anchors = q.anchor_embed.weight.sigmoid()
    assert anchors.min() < 0.05 and anchors.max() > 0.95
    assert abs(anchors.mean().item() - 0.5) < 0.05
