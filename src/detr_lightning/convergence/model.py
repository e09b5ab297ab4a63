"""ConvergenceDETR: the paper's detector with lever components plugged in.

The model is :class:`~detr_lightning.detr.set_detector.SetDetector` (backbone, encoder, class head,
box MLP, output dict) plus components, each its own config node that exists only when used:

* ``queries`` — what the decoder starts from (:mod:`~detr_lightning.convergence.queries`):
  learned queries (optionally Group DETR groups), learned anchor boxes, or two-stage proposal
  queries with a linear or conv proposal head (and its class prior);
* ``box_refinement`` — per-layer box refinement (:mod:`~detr_lightning.convergence.refinement`),
  driving the paper's decoder through its ``layer_hook`` extension point;
* ``denoiser`` — DN-DETR training queries (:class:`~detr_lightning.convergence.denoising.Denoiser`);
* ``aux_head`` — a training-only dense proposal head on the memory (Co-DETR), for learned or
  anchor queries;
* ``scoring`` — the class scoring, e.g. sigmoid focal classification (no "no object" column;
  a 1 % prior bias, :mod:`~detr_lightning.convergence.focal_scoring`), set by the ``cls_loss``
  config group together with the matcher's, criterion's and post-processing's;
* ``attention_prior`` — a bias on the decoder's cross-attention around each query's reference
  box (:mod:`~detr_lightning.convergence.box_attention`, SMCA); needs ``box_refinement``;
* ``cross_attention`` — the decoder layers read the memory (and optionally earlier backbone
  stages) at learned points around their reference box instead of attending to all of it
  (:mod:`~detr_lightning.convergence.deformable_attention`); needs ``box_refinement``;
* ``decoder_hook`` — a per-layer decoder change: a module whose ``for_images(enc, position)``
  gives each forward's :class:`~detr_lightning.detr.transformer_stacks.DecoderLayerHook`
  (:mod:`~detr_lightning.convergence.conditional_queries`); excludes ``box_refinement``, which
  drives the decoder through its own hook;
* ``detach_memory`` — the decoder reads the memory without back-propagating into it.

Components are partials called with :class:`~detr_lightning.convergence.dims.ModelDims`.
Combinations that cannot work fail here, naming the config keys. Training-only outputs:
``group_outputs``, ``dn_outputs`` + ``dn_queries``, ``enc_outputs``; at inference the output
contract is DETR's.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from functools import partial
from typing import Any

from torch import Tensor, nn

from detr_lightning.convergence.box_attention import token_centres
from detr_lightning.convergence.combinations import check_combination
from detr_lightning.convergence.denoising import query_attention_mask
from detr_lightning.convergence.dims import ModelDims
from detr_lightning.convergence.official_release import adapt_official_state_dict
from detr_lightning.convergence.queries import LearnedQueries
from detr_lightning.convergence.query_rows import prepend_denoising, split_outputs
from detr_lightning.convergence.refinement import RefiningDecoderHook, zero_last_layer
from detr_lightning.detr.class_scoring import SoftmaxScoring
from detr_lightning.detr.set_detector import MLP, EncodedImage, SetDetector, Targets
from detr_lightning.detr.transformer import Transformer

Factory = Callable[[ModelDims], nn.Module]


class ConvergenceDETR(SetDetector):
    """DETR with lever components (module docstring).

    Args (beyond :class:`~detr_lightning.detr.model.DETR`'s):
        queries: partial query source (default: the paper's learned queries).
        box_refinement: partial :class:`~detr_lightning.convergence.refinement.BoxRefinement`
            or None; needed by, and only by, reference-box queries (anchors, proposals).
        denoiser: partial :class:`~detr_lightning.convergence.denoising.Denoiser` or None.
        aux_head: partial proposal head ``(d_model, num_logits, scoring)`` trained as a dense
            auxiliary head (``enc_outputs``), or None.
        scoring: the class scoring (None: the paper's softmax); e.g.
            :class:`~detr_lightning.convergence.focal_scoring.FocalScoring`.
        detach_memory: the decoder's losses do not reach the encoder and backbone.
        attention_prior: partial
            :class:`~detr_lightning.convergence.box_attention.BoxAttentionPrior` or None; needs
            ``box_refinement``.
        cross_attention: partial
            :class:`~detr_lightning.convergence.deformable_attention.BoxDeformableAttention`
            or None: replaces every decoder layer's ``multihead_attn``; needs
            ``box_refinement``, excludes ``attention_prior``.
        decoder_hook: partial decoder-hook source (module docstring) or None, e.g.
            :class:`~detr_lightning.convergence.conditional_queries.ConditionalQueryScale`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        position_encoding: nn.Module,
        transformer: Transformer,
        num_classes: int,
        num_queries: int = 100,
        aux_loss: bool = True,
        queries: Factory | None = None,
        box_refinement: Factory | None = None,
        denoiser: Factory | None = None,
        aux_head: Callable[..., nn.Module] | None = None,
        scoring: SoftmaxScoring | None = None,
        detach_memory: bool = False,
        attention_prior: Factory | None = None,
        cross_attention: Factory | None = None,
        decoder_hook: Factory | None = None,
    ) -> None:
        super().__init__(
            backbone, position_encoding, transformer, num_classes, num_queries, aux_loss, scoring
        )
        num_logits = self.scoring.num_logits(num_classes)
        d = transformer.d_model
        names, channels = getattr(backbone, "stages", ()), getattr(backbone, "stage_channels", ())
        stages = dict(zip(names, channels, strict=True))  # FeatureBackbone's: name -> channels
        dims = ModelDims(
            d, num_queries, num_classes, num_logits, self.scoring, len(transformer.decoder.layers),
            transformer.nhead, stages,
        )  # fmt: skip
        self.detach_memory = detach_memory
        self.stage_names = tuple(stages)
        self.queries = (queries or LearnedQueries)(dims)
        check_combination(self.queries, box_refinement, denoiser, aux_head, transformer,
                          attention_prior, cross_attention, decoder_hook)  # fmt: skip
        self.init_class_head(reset=False)  # just built
        self.aux_head = aux_head(d, num_logits, self.scoring) if aux_head is not None else None
        self.box_refinement = box_refinement(dims) if box_refinement is not None else None
        if self.box_refinement is not None:
            zero_last_layer(self.bbox_embed)  # the last layer's refinement head
        if box_refinement is not None or denoiser is not None:
            # Boxes (references, noised ground truth) -> positional queries.
            self.ref_point_head = MLP(d, d, d, 2)
        self.denoiser = denoiser(dims) if denoiser is not None else None
        self.attention_prior = attention_prior(dims) if attention_prior is not None else None
        self.deformable = cross_attention is not None
        self.decoder_hook = decoder_hook(dims) if decoder_hook is not None else None
        for layer in transformer.decoder.layers if self.deformable else ():
            layer.multihead_attn = cross_attention(dims)

    def init_class_head(self, reset: bool = True) -> None:
        """The class head's start (``reset``: torch's Linear init and the scoring's start, e.g.
        a focal prior, first): all zeros under a proposal class prior (the decoder's logits then
        start equal to its proposals')."""
        if reset:
            super().init_class_head()
        if getattr(self.queries, "class_prior", False):
            nn.init.zeros_(self.class_embed.weight)
            nn.init.zeros_(self.class_embed.bias)

    adapt_official_state_dict = adapt_official_state_dict

    def forward(
        self, pixel_values: Tensor, pixel_mask: Tensor | None = None, targets: Targets | None = None
    ) -> dict[str, Any]:
        """Detect objects; ``targets`` (labels [T], boxes [T, 4] cxcywh) feed the denoiser.

        Returns DETR's outputs and, in training, ``group_outputs`` (one dict per extra query
        group), ``dn_outputs`` + ``dn_queries`` (the denoising reconstructions and the
        :class:`~detr_lightning.convergence.denoising.DenoisingQueries` that made them) and
        ``enc_outputs`` (the dense head's ``pred_logits``/``pred_boxes``/``cells``).
        """
        return self.forward_with_hidden(pixel_values, pixel_mask, targets)[0]

    def forward_with_hidden(
        self, pixel_values: Tensor, pixel_mask: Tensor | None = None, targets: Targets | None = None
    ) -> tuple[dict[str, Any], EncodedImage, Tensor]:
        """:meth:`forward` that also returns the :class:`EncodedImage` and hs [L, B, Q, d]: every
        decoder layer's output for the ``num_queries`` matching queries of group 0 only (the
        rows of ``pred_logits``; denoising queries and extra groups are cut off), which the
        panoptic mask head (:class:`~detr_lightning.detr.segmentation.DETRsegm`) reads."""
        dn = self.denoiser(targets) if self.denoiser is not None else None
        enc = self.encode(pixel_values, pixel_mask)
        queries = self.queries(enc)
        queries.check(self.queries, enc.memory.shape[0], self.num_queries, enc.memory.shape[-1])
        dense = queries.dense
        if self.aux_head is not None and self.training:
            proposals = self.aux_head(enc.memory, enc.mask)
            dense = {k: proposals[k] for k in ("pred_logits", "pred_boxes", "cells")}
        content, position, reference, prior = prepend_denoising(
            queries, dn, self.denoiser, getattr(self, "ref_point_head", None), self.training
        )
        memory = enc.memory.detach() if self.detach_memory else enc.memory
        attn_mask = query_attention_mask(
            self.num_queries, queries.groups, dn.num_groups if dn else 0, dn.pad if dn else 0,
            memory.device,
        )  # fmt: skip
        hook = None
        if self.box_refinement is not None:
            heads = [*self.box_refinement.layer_bbox_embed, self.bbox_embed]
            bias = None  # reference boxes -> cross-attention bias
            if self.attention_prior is not None:
                x, y = token_centres(enc.features[-1][1])  # the map the memory flattens
                bias = partial(self.attention_prior, x=x, y=y)
            hook = RefiningDecoderHook(heads, self.ref_point_head, reference, bias)
        elif self.decoder_hook is not None:
            hook = self.decoder_hook.for_images(enc, position)
        with ExitStack() as samplers:
            if self.deformable:  # each layer reads the hook's current reference boxes
                stages = {  # the backbone's maps, for attention that reads earlier levels
                    name: (features.detach() if self.detach_memory else features, mask)
                    for name, (features, mask) in zip(self.stage_names, enc.features, strict=True)
                }
                for layer in self.transformer.decoder.layers:
                    samplers.enter_context(
                        layer.multihead_attn.bound(lambda: hook.reference, enc.mask, stages)
                    )
            hs = self.transformer.decode(
                memory, enc.key_mask, enc.pos, position, content, attn_mask, hook
            )
        logits = self.class_embed(hs)
        if prior is not None:
            logits = logits + prior
        refined = isinstance(hook, RefiningDecoderHook)
        boxes = hook.finish(hs) if refined else self.bbox_embed(hs).sigmoid()
        out = split_outputs(logits, boxes, self.num_queries, queries.groups, dn, self.layer_outputs)
        if dense is not None and self.training:
            out["enc_outputs"] = dense
        num_dn = dn.num_queries if dn is not None else 0  # [dn | group 0 | group 1 ...]
        return out, enc, hs[:, :, num_dn : num_dn + self.num_queries]
