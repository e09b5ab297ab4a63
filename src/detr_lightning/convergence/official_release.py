"""Fine-tuning a lever model from an official DETR release (``model.pretrained=``).

The paper's loader (:mod:`detr_lightning.detr.official`) asks the model, through its
``adapt_official_state_dict``, how the release's tensors map onto it. A lever model is the
paper's detector with components added or swapped, so:

* the paper's learned queries ``query_embed.weight`` become ``queries.embed.weight``
  (:class:`~detr_lightning.convergence.queries.LearnedQueries`, one group; with Group DETR's
  groups the shapes differ and loading stops, naming both);
* the release keys that a lever replaces are not used: ``query_embed`` under anchor or
  proposal queries, ``bbox_embed`` under box refinement (there it predicts an offset from the
  reference box, not a box), every decoder layer's ``multihead_attn`` under deformable cross
  attention;
* the levers' own parameters (queries, refinement heads, denoiser, dense head, reference-point
  MLP, attention prior, deformable attention, decoder hook, refinement's ``bbox_embed``) keep
  their initialisation, and the loader logs them.

Everything else must match by name and shape, as for the paper's model: a different trunk,
width or layer count still stops with the differences listed.
"""

from __future__ import annotations

from torch import Tensor, nn

from detr_lightning.convergence.queries import LearnedQueries

# Lever components' attribute names on ConvergenceDETR: no release holds their parameters.
_LEVER_MODULES = ("queries.", "box_refinement.", "denoiser.", "aux_head.", "ref_point_head.",
                  "attention_prior.", "decoder_hook.")  # fmt: skip


def adapt_official_state_dict(
    model: nn.Module, release: dict[str, Tensor]
) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """A converted release state dict (this project's paper key names, detector keys only) ->
    (the tensors to load, in ``model``'s names; the release keys a lever replaced, not used;
    ``model``'s keys that no release holds, kept as initialised)."""
    tensors = dict(release)
    unused_parts: list[str] = []  # the release's parts that a lever replaced
    fresh_parts = list(_LEVER_MODULES)  # the model's parts that no release holds
    if isinstance(model.queries, LearnedQueries):
        if "query_embed.weight" in tensors:
            tensors["queries.embed.weight"] = tensors.pop("query_embed.weight")
    else:
        unused_parts.append("query_embed.")
    if model.box_refinement is not None:
        unused_parts.append("bbox_embed.")
        fresh_parts.append("bbox_embed.")
    if model.deformable:
        layers = range(len(model.transformer.decoder.layers))
        attention = [f"transformer.decoder.layers.{i}.multihead_attn." for i in layers]
        unused_parts += attention
        fresh_parts += attention
    unused = sorted(k for k in tensors if k.startswith(tuple(unused_parts)))
    tensors = {k: v for k, v in tensors.items() if k not in unused}
    own = model.state_dict()
    fresh = sorted(k for k in own if k.startswith(tuple(fresh_parts)) and k not in tensors)
    return tensors, unused, fresh
