"""Iterative box refinement (Deformable DETR): every decoder layer moves its reference box.

Each layer's box is ``sigmoid(logit(reference) + head_i(hidden))`` with its own zero-initialised
head, so a fresh layer keeps its reference; the next layer starts from that box (detached, so
gradients stay local to a layer) and reads it as its positional query through a sine encoding
and ``ref_point_head``. One head per layer: a head shared by every layer must predict both the
first, large move away from the anchor and the later small corrections.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from detr_lightning.convergence.box_encoding import box_sine_embedding, inverse_sigmoid
from detr_lightning.convergence.dims import ModelDims
from detr_lightning.detr.set_detector import MLP


def zero_last_layer(head: MLP) -> None:
    """Make ``head`` output zeros (a refinement head that starts by keeping its box)."""
    nn.init.zeros_(head.layers[-1].weight)
    nn.init.zeros_(head.layers[-1].bias)


class BoxRefinement(nn.Module):
    """Per-layer box heads for every decoder layer but the last (whose head is the model's
    ``bbox_embed``, zero-initialised by the model), and the step that applies one.

    Args:
        dims: the model's sizes (``d_model``, ``num_decoder_layers``).
    """

    def __init__(self, dims: ModelDims) -> None:
        super().__init__()
        d = dims.d_model
        self.layer_bbox_embed = nn.ModuleList(
            MLP(d, d, 4, 3) for _ in range(dims.num_decoder_layers - 1)
        )
        for head in self.layer_bbox_embed:
            zero_last_layer(head)

    @staticmethod
    def refine(head: MLP, hidden: Tensor, reference: Tensor) -> Tensor:
        """hidden [B, N, d], reference [B, N, 4] cxcywh -> refined boxes [B, N, 4] cxcywh."""
        return (head(hidden) + inverse_sigmoid(reference)).sigmoid()


class RefiningDecoderHook:
    """The decoder's ``layer_hook`` under box refinement: before layer i it turns layer i-1's
    output into that layer's box, keeps it, and returns the positional query of the new
    reference. ``finish`` adds the last layer's box.

    Args:
        heads: one box head per decoder layer.
        ref_point_head: MLP from the sine encoding of a box [.., d] to a positional query [.., d].
        reference: [B, N, 4] the first layer's reference boxes.
        prior: reference boxes [B, N, 4] -> the next layer's cross-attention bias [B * heads,
            N, S] (:class:`~detr_lightning.convergence.box_attention.BoxAttentionPrior` at the
            memory's token centres), or None.
    """

    def __init__(
        self,
        heads: list[MLP],
        ref_point_head: nn.Module,
        reference: Tensor,
        prior: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self.heads, self.ref_point_head, self.reference = heads, ref_point_head, reference
        self.prior = prior
        self.boxes: list[Tensor] = []

    def _step(self, index: int, hidden: Tensor) -> None:
        box = BoxRefinement.refine(self.heads[index], hidden, self.reference)
        self.boxes.append(box)
        self.reference = box.detach()

    def __call__(self, index: int, hidden: Tensor | None) -> Tensor:
        if hidden is not None:
            self._step(index - 1, hidden)
        width = self.ref_point_head.layers[0].in_features
        return self.ref_point_head(box_sine_embedding(self.reference, width))

    def memory_bias(self) -> Tensor | None:
        """The prior's cross-attention bias around the current reference boxes, or None."""
        return None if self.prior is None else self.prior(self.reference)

    def finish(self, hs: Tensor) -> Tensor:
        """hs [L, B, N, d] -> every layer's boxes [L, B, N, 4]."""
        self._step(len(self.heads) - 1, hs[-1])
        return torch.stack(self.boxes)
