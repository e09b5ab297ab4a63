"""Lever combinations that cannot work: ConvergenceDETR refuses them when it is built, naming
the config keys to change."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from detr_lightning.convergence.dims import ModelDims
from detr_lightning.convergence.queries import ProposalQueries
from detr_lightning.detr.transformer import Transformer

Factory = Callable[[ModelDims], nn.Module]


def check_combination(
    queries: nn.Module,
    box_refinement: Factory | None,
    denoiser: Factory | None,
    aux_head: Callable[..., nn.Module] | None,
    transformer: Transformer,
    attention_prior: Factory | None = None,
    cross_attention: Factory | None = None,
    decoder_hook: Factory | None = None,
) -> None:
    """Raise on lever combinations that cannot work, naming the config keys.

    A query source must declare ``uses_reference`` (README: Adding a lever): it is required, not
    defaulted, because a source that returns reference boxes but is taken for one without would
    run with ``refine=boxes`` missing and its boxes never read."""
    name = type(queries).__name__
    uses_reference = getattr(queries, "uses_reference", None)
    if not isinstance(uses_reference, bool):
        raise ValueError(
            f"model.net.queries={name} has no boolean class attribute `uses_reference` (got "
            f"{uses_reference!r}); a query source declares whether its DecoderQueries carry "
            "reference boxes (convergence/queries.py, README: Adding a lever). Fix: add "
            "`uses_reference = True` (reference boxes: needs refine=boxes) or "
            "`uses_reference = False` to the class."
        )
    if uses_reference and box_refinement is None:
        raise ValueError(
            f"model.net.queries={name} starts the decoder from reference boxes, which need "
            "model.net.box_refinement (add refine=boxes, or use queries=learned)."
        )
    if box_refinement is not None and not uses_reference:
        raise ValueError(
            f"model.net.box_refinement needs reference boxes, but model.net.queries={name} has "
            "none: use queries=anchors or queries=proposals, or remove the box_refinement node."
        )
    if aux_head is not None and isinstance(queries, ProposalQueries):
        raise ValueError(
            "model.net.aux_head with model.net.queries=ProposalQueries: the proposal head "
            "already trains the encoder densely; remove the aux_head node."
        )
    extra = box_refinement or denoiser or decoder_hook or getattr(queries, "groups", 1) > 1
    if extra and transformer.query_pos != "attn":
        raise ValueError(
            "model.net.box_refinement / denoiser / decoder_hook / queries.groups need "
            f"model.net.transformer.query_pos=attn (got {transformer.query_pos!r})."
        )
    if decoder_hook is not None and box_refinement is not None:
        raise ValueError(
            "model.net.decoder_hook and model.net.box_refinement both drive the decoder's "
            "per-layer hook (refine=boxes builds its own): remove one of them."
        )
    if attention_prior is not None and box_refinement is None:
        raise ValueError(
            "model.net.attention_prior centres each query's cross-attention on its "
            "reference box, which needs model.net.box_refinement (add refine=boxes)."
        )
    if cross_attention is not None and (box_refinement is None or attention_prior):
        raise ValueError(
            "model.net.cross_attention samples around each query's reference box: it needs "
            "model.net.box_refinement (refine=boxes) and replaces the attention that "
            "model.net.attention_prior biases (remove one of them)."
        )
    if cross_attention is not None and transformer.decoder_pos == "attn":
        raise ValueError(
            "model.net.cross_attention reads the memory at points around each box, never "
            "through keys, so model.net.transformer.decoder_pos=attn (the spatial encoding "
            "on the keys) would have no effect: set decoder_pos=none (cross_attention="
            "deformable does) or input (added to the memory it reads)."
        )
