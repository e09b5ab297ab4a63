"""Query sources: what the decoder starts from, one component per kind of query.

* :class:`LearnedQueries` — the paper's learned positional queries, optionally ``groups`` > 1
  copies trained one-to-one each (Group DETR; only group 0 runs at inference).
* :class:`AnchorQueries` — learned anchor boxes whose sine encoding is the positional query
  (DAB-DETR); needs :class:`~detr_lightning.convergence.refinement.BoxRefinement`.
* :class:`ProposalQueries` — two-stage selection: a dense proposal head on the encoder memory
  (a linear or a conv head) and its best proposals seed the decoder (Deformable-DETR two-stage,
  DINO, RT-DETR); needs box refinement.

Each is built by :class:`~detr_lightning.convergence.model.ConvergenceDETR` from a partial
(``_partial_: true`` in config) called with the model's
:class:`~detr_lightning.convergence.dims.ModelDims`, so the config states only the lever's own
settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detr_lightning.convergence.box_encoding import inverse_sigmoid
from detr_lightning.convergence.dims import ModelDims
from detr_lightning.detr.set_detector import EncodedImage


@dataclass
class DecoderQueries:
    """The decoder's starting point for the matching queries of one batch.

    Attributes:
        content: [B, N, d] initial decoder content (zeros for learned queries).
        position: [B, N, d] fixed positional queries, or None when they come from
            ``reference`` boxes (box refinement recomputes them at every layer).
        reference: [B, N, 4] normalised cxcywh reference boxes, or None.
        prior: [B, N, num_logits] class-logit prior added to every decoder layer's logits, or None.
        groups: query groups in ``N`` (N = groups * num_queries).
        dense: the proposal head's outputs for the ``_enc`` losses (``pred_logits``,
            ``pred_boxes``, ``cells``), or None.
    """

    content: Tensor
    position: Tensor | None
    reference: Tensor | None = None
    prior: Tensor | None = None
    groups: int = 1
    dense: dict[str, Tensor] | None = None

    def check(self, source: nn.Module, batch: int, num_queries: int, d_model: int) -> None:
        """Raise naming ``source`` (the ``model.net.queries`` component) when the shapes break
        the contract above: a new query source fails here, not inside the decoder."""
        n = self.groups * num_queries
        expected = {"content": (batch, n, d_model), "position": (batch, n, d_model),
                    "reference": (batch, n, 4)}  # fmt: skip
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(
                    f"model.net.queries={type(source).__name__} returned {name} of shape "
                    f"{tuple(value.shape)}; DecoderQueries.{name} must be [B, groups * "
                    f"num_queries, {'4' if name == 'reference' else 'd_model'}] = {list(shape)} "
                    "(convergence/queries.py, DecoderQueries)."
                )


class LearnedQueries(nn.Module):
    """The paper's learned object queries; ``groups`` > 1 trains that many independent sets.

    Args:
        dims: the model's sizes (``d_model``, ``num_queries`` per group).
        groups: Group DETR's K (1 = the paper).
    """

    uses_reference = False

    def __init__(self, dims: ModelDims, groups: int = 1) -> None:
        super().__init__()
        if groups < 1:
            raise ValueError(f"model.net.queries.groups={groups}: need >= 1")
        self.num_queries, self.groups = dims.num_queries, groups
        self.embed = nn.Embedding(dims.num_queries * groups, dims.d_model)

    def forward(self, enc: EncodedImage) -> DecoderQueries:
        """Training uses every group, inference group 0 only."""
        groups = self.groups if self.training else 1
        b = enc.memory.shape[0]
        position = self.embed.weight[: self.num_queries * groups][None].expand(b, -1, -1)
        return DecoderQueries(torch.zeros_like(position), position, groups=groups)


class AnchorQueries(nn.Module):
    """Learned anchor boxes (DAB-DETR), uniform in the image at initialisation.

    Args:
        dims: the model's sizes (``d_model``: the content starts at zero; ``num_queries`` per
            group).
        groups: Group DETR's K.
    """

    uses_reference = True

    def __init__(self, dims: ModelDims, groups: int = 1) -> None:
        super().__init__()
        if groups < 1:
            raise ValueError(f"model.net.queries.groups={groups}: need >= 1")
        self.d_model, self.num_queries, self.groups = dims.d_model, dims.num_queries, groups
        self.anchor_embed = nn.Embedding(dims.num_queries * groups, 4)
        nn.init.uniform_(self.anchor_embed.weight, 0.0, 1.0)
        self.anchor_embed.weight.data = inverse_sigmoid(self.anchor_embed.weight.data)

    def forward(self, enc: EncodedImage) -> DecoderQueries:
        groups = self.groups if self.training else 1
        b = enc.memory.shape[0]
        ref = self.anchor_embed.weight[: self.num_queries * groups].sigmoid()[None]
        ref = ref.expand(b, -1, -1)
        content = enc.memory.new_zeros(b, ref.shape[1], self.d_model)
        return DecoderQueries(content, None, ref, groups=groups)


class ProposalQueries(nn.Module):
    """Two-stage query selection from a dense proposal head on the encoder memory.

    Args:
        dims: the model's sizes.
        head: partial proposal head, called ``head(d_model, num_logits, scoring)``:
            :class:`~detr_lightning.convergence.proposals.EncoderProposals` (per-token linear)
            or :class:`~detr_lightning.convergence.conv_proposals.ConvProposals` (3x3 conv tower,
            peak selection).
        class_prior: every decoder layer's class logits start from the selected proposal's
            logits (detached); the model then zero-initialises its class head, so a fresh
            decoder predicts exactly its proposals and learns corrections.
    """

    uses_reference = True

    def __init__(
        self, dims: ModelDims, head: Callable[..., nn.Module], class_prior: bool = False
    ) -> None:
        super().__init__()
        self.num_queries, self.class_prior = dims.num_queries, class_prior
        self.head = head(dims.d_model, dims.num_logits, dims.scoring)

    def forward(self, enc: EncodedImage) -> DecoderQueries:
        proposals = self.head(enc.memory, enc.mask)
        ref, content, prior = self.head.select(proposals, enc.mask, self.num_queries)
        dense = {k: proposals[k] for k in ("pred_logits", "pred_boxes", "cells")}
        return DecoderQueries(content, None, ref, prior if self.class_prior else None, dense=dense)
