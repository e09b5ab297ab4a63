"""The decoder's query rows in training: denoising queries put in front of the matching groups,
and the decoder's outputs cut back into a dn part and one output dict per group.

The row layout and the attention rules between its parts are
:mod:`~detr_lightning.convergence.denoising`'s; at inference there is one group and no dn part.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from detr_lightning.convergence.box_encoding import box_sine_embedding
from detr_lightning.convergence.denoising import DenoisingQueries, zero_tie
from detr_lightning.convergence.queries import DecoderQueries

QueryInputs = tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]


def prepend_denoising(
    queries: DecoderQueries,
    dn: DenoisingQueries | None,
    denoiser: nn.Module | None,
    ref_point_head: nn.Module | None,
    training: bool,
) -> QueryInputs:
    """The decoder's content [B, N, d], positions [B, N, d] (None with reference boxes),
    reference boxes [B, N, 4] cxcywh in [0, 1] (or None) and class prior [B, N, K] (or None),
    with ``dn``'s ``dn.num_queries`` rows in front of ``queries``' rows.

    ``denoiser`` embeds the noised labels; ``ref_point_head`` turns noised boxes into positions
    when the queries have no reference boxes (the refining decoder does it for them otherwise).
    """
    content, position, reference, prior = (
        queries.content, queries.position, queries.reference, queries.prior,
    )  # fmt: skip
    if dn is None:
        if training and denoiser is not None:
            # A batch without objects has no dn queries. Under DDP (find_unused_parameters
            # false) a weight without a gradient on one rank stops the run, so the dn-only
            # weights join the graph with weight 0 (values unchanged).
            content = content + zero_tie(denoiser, ref_point_head if reference is None else None)
        return content, position, reference, prior
    content = torch.cat([denoiser.label_embed(dn.labels), content], dim=1)
    if reference is not None:
        reference = torch.cat([dn.boxes, reference], dim=1)
    else:
        dn_pos = ref_point_head(box_sine_embedding(dn.boxes, content.shape[-1]))
        position = torch.cat([dn_pos, position], dim=1)
    if prior is not None:  # denoising queries have no proposal: their prior is 0
        prior = torch.cat([prior.new_zeros(*dn.labels.shape, prior.shape[-1]), prior], 1)
    return content, position, reference, prior


def split_outputs(
    logits: Tensor,
    boxes: Tensor,
    num_queries: int,
    groups: int,
    dn: DenoisingQueries | None,
    layer_outputs: Callable[[Tensor, Tensor], dict[str, Any]],
) -> dict[str, Any]:
    """Cut the decoder's [L, B, N, K] logits and [L, B, N, 4] cxcywh boxes into DETR's output
    dict for group 0 (``layer_outputs`` builds one), ``group_outputs`` for the other groups and
    ``dn_outputs`` + ``dn_queries`` for the dn rows."""
    q, num_dn = num_queries, dn.num_queries if dn is not None else 0
    chunks = [
        layer_outputs(
            logits[:, :, num_dn + g * q : num_dn + (g + 1) * q],
            boxes[:, :, num_dn + g * q : num_dn + (g + 1) * q],
        )
        for g in range(groups)
    ]
    out = chunks[0]
    if groups > 1:
        out["group_outputs"] = chunks[1:]
    if dn is not None:
        out["dn_outputs"] = layer_outputs(logits[:, :, :num_dn], boxes[:, :, :num_dn])
        out["dn_queries"] = dn
    return out
