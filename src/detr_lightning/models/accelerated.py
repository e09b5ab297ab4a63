"""DETR with switchable convergence levers (the paper's model when every lever is off).

Levers, each a constructor argument (so a Hydra option), all training-time except
``box_refine`` and ``focal`` which change the architecture:

* ``denoising.groups`` > 0 — DN-DETR: noised ground-truth boxes/labels become extra decoder
  queries, reconstructed by the same heads behind an attention mask (training only).
* ``query_groups`` > 1 — Group DETR: K groups of ``num_queries`` queries, self-attention inside a
  group, one-to-one matching per group; only group 0 runs at inference.
* ``box_refine`` — anchor-box queries (DAB-DETR style): each query carries a learned box whose
  sine encoding is its positional query, refined by every decoder layer with its own
  zero-initialised box head (``box = sigmoid(logit(ref) + delta)``, Deformable-DETR's
  iterative refinement); the last layer's head is ``bbox_embed``, the others
  ``layer_bbox_embed``.
* ``two_stage`` (needs ``box_refine``) — every encoder token proposes a class and a box, the
  ``num_queries`` best proposals seed the decoder's reference boxes and content queries
  (:mod:`~detr_lightning.models.two_stage`); training adds ``enc_outputs``.
* ``encoder_aux_head`` — the same per-token head on the encoder memory, trained (``enc_outputs``,
  best with the criterion's ``encoder_matcher``: CenterMatcher) but not used to pick queries and
  not run at inference: a dense, training-only signal for a randomly initialised backbone
  (Co-DETR's auxiliary one-to-many heads).
* ``proposal_head`` — "linear" (per-token :class:`~detr_lightning.models.two_stage.EncoderProposals`)
  or "conv" (:class:`~detr_lightning.models.conv_proposals.ConvProposals`: a 3x3 conv tower with
  FCOS-style boxes and peak query selection) for ``two_stage`` and ``encoder_aux_head``.
  ``proposal_tower`` and ``proposal_peaks`` set the conv head's depth and peak selection.
* ``class_prior`` (needs ``two_stage``) — every decoder layer's class logits are its
  head's output plus the selected proposal's logits (detached), the head starting at zero: the
  decoder starts out predicting what the proposals predict and learns corrections (e.g.
  lowering duplicates). Denoising queries get a zero prior.
* ``detach_memory`` — the decoder reads the memory without back-propagating into it, so only
  the proposal / aux-head losses train the backbone (the decoder's Hungarian losses are noise
  for it while the proposals are poor).
* ``focal`` — sigmoid class head with ``num_classes`` columns (no "no object" column), bias set
  to a 0.01 prior; pair it with the criterion's and post-processor's ``focal=True``.

With every lever off the parameters, their names and the outputs are exactly :class:`DETR`'s,
so official checkpoints load into it and the paper presets are unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from detr_lightning.models.backbone import Backbone
from detr_lightning.models.box_encoding import box_sine_embedding, inverse_sigmoid
from detr_lightning.models.conv_proposals import ConvProposals
from detr_lightning.models.denoising import make_denoising_queries, query_attention_mask
from detr_lightning.models.detr import DETR, MLP
from detr_lightning.models.transformer import Transformer
from detr_lightning.models.two_stage import EncoderProposals


class AcceleratedDETR(DETR):
    """DETR plus the convergence levers described in the module docstring.

    Args (beyond :class:`DETR`'s):
        focal: sigmoid classification head without a "no object" column.
        box_refine: anchor-box queries with per-layer box refinement.
        query_groups: Group DETR's K (1 = off).
        two_stage: query selection from encoder proposals (replaces the learned anchors).
        encoder_aux_head: train an encoder proposal head without selecting queries from it.
        proposal_head: "linear" or "conv", the proposal head of two_stage / encoder_aux_head.
        class_prior: decoder class logits = head output + selected proposal logits.
        proposal_tower: 3x3 conv layers of the conv proposal head.
        proposal_peaks: the conv head selects 3x3 peaks of its score map (False: plain top-k).
        detach_memory: the decoder reads the memory without back-propagating into it.
        denoising: DN-DETR settings, ``{"groups": G, "label_noise": p, "box_noise": lambda}``:
            G noised copies of every target (0 or None = off), label-flip probability
            (default 0.2) and box noise scale (default 0.4), the DN-DETR paper's values.
    """

    def __init__(
        self,
        backbone: Backbone,
        position_encoding: nn.Module,
        transformer: Transformer,
        num_classes: int,
        num_queries: int = 100,
        aux_loss: bool = True,
        focal: bool = False,
        box_refine: bool = False,
        query_groups: int = 1,
        denoising: Mapping[str, float] | None = None,
        two_stage: bool = False,
        encoder_aux_head: bool = False,
        proposal_head: str = "linear",
        class_prior: bool = False,
        proposal_tower: int = 2,
        proposal_peaks: bool = True,
        detach_memory: bool = False,
    ) -> None:
        super().__init__(
            backbone, position_encoding, transformer, num_classes, num_queries, aux_loss
        )
        dn = {"groups": 0, "label_noise": 0.2, "box_noise": 0.4, **(denoising or {})}
        if set(dn) != {"groups", "label_noise", "box_noise"}:
            raise ValueError(
                f"denoising has unknown keys {sorted(set(dn) - {'groups', 'label_noise', 'box_noise'})};"
                " use groups, label_noise, box_noise"
            )
        denoising_groups = int(dn["groups"])
        levers = box_refine or denoising_groups or query_groups > 1 or encoder_aux_head
        if transformer.query_pos != "attn" and levers:
            raise ValueError("AcceleratedDETR levers need transformer.query_pos='attn'")
        if two_stage and (not box_refine or query_groups > 1):
            raise ValueError("two_stage needs box_refine=True and query_groups=1")
        if proposal_head not in ("linear", "conv"):
            raise ValueError(f"proposal_head='{proposal_head}': use 'linear' or 'conv'")
        if class_prior and not two_stage:
            raise ValueError("class_prior needs two_stage=True (the prior is the proposals')")
        if query_groups < 1 or denoising_groups < 0:
            raise ValueError("need query_groups >= 1 and denoising.groups >= 0")
        d = transformer.d_model
        self.focal, self.box_refine = focal, box_refine
        self.query_groups, self.denoising_groups = query_groups, denoising_groups
        self.two_stage, self.encoder_aux_head = two_stage, encoder_aux_head
        self.class_prior, self.detach_memory = class_prior, detach_memory
        self.label_noise, self.box_noise = float(dn["label_noise"]), float(dn["box_noise"])
        if focal:
            self.class_embed = nn.Linear(d, num_classes)
            # Start every class at a 1% probability so the focal loss is not swamped by negatives.
            nn.init.constant_(self.class_embed.bias, -math.log((1 - 0.01) / 0.01))
        if two_stage or encoder_aux_head:
            num_logits = num_classes + (0 if focal else 1)
            if proposal_head == "conv":
                self.encoder_proposals = ConvProposals(
                    d, num_logits, focal, proposal_tower, proposal_peaks
                )
            else:
                self.encoder_proposals = EncoderProposals(d, num_logits, focal)
        if class_prior:
            # Decoder logits start equal to the proposals' (see the module docstring).
            nn.init.zeros_(self.class_embed.weight)
            nn.init.zeros_(self.class_embed.bias)
        if two_stage:
            del self.query_embed
        elif box_refine:
            del self.query_embed
            self.anchor_embed = nn.Embedding(num_queries * query_groups, 4)
            nn.init.uniform_(self.anchor_embed.weight, 0.0, 1.0)
            self.anchor_embed.weight.data = inverse_sigmoid(self.anchor_embed.weight.data)
        elif query_groups > 1:
            self.query_embed = nn.Embedding(num_queries * query_groups, d)
        if box_refine:
            # One box head per decoder layer (Deformable DETR): a head shared by every layer must
            # predict both the first, large move away from the anchor and the later small
            # corrections, which measurably slowed fitting. The last layer keeps ``bbox_embed``.
            num_layers = len(transformer.decoder.layers)
            self.layer_bbox_embed = nn.ModuleList(MLP(d, d, 4, 3) for _ in range(num_layers - 1))
            for head in [*self.layer_bbox_embed, self.bbox_embed]:
                nn.init.zeros_(head.layers[-1].weight)  # every layer starts by keeping its box
                nn.init.zeros_(head.layers[-1].bias)
        if box_refine or denoising_groups:
            self.ref_point_head = MLP(d, d, d, 2)
        if denoising_groups:
            self.label_embed = nn.Embedding(num_classes, d)

    def forward(
        self,
        pixel_values: Tensor,
        pixel_mask: Tensor | None = None,
        targets: list[dict[str, Tensor]] | None = None,
    ) -> dict[str, Any]:
        """Detect objects; ``targets`` (labels [T], boxes [T, 4] cxcywh) feed denoising queries.

        Returns :class:`DETR`'s outputs. In training mode, with the levers on, also
        ``group_outputs`` (one dict per extra query group, same keys as the main output) and
        ``dn_outputs`` + ``dn_queries`` (the reconstructions of the denoising queries and the
        :class:`~detr_lightning.models.denoising.DenoisingQueries` that made them) and, with
        ``two_stage`` or ``encoder_aux_head``, ``enc_outputs`` (``pred_logits``/``pred_boxes``/
        ``cells`` of every encoder token).
        """
        groups = self.query_groups if self.training else 1
        dn = None
        if self.training and self.denoising_groups and targets is not None:
            dn = make_denoising_queries(
                targets, self.num_classes, self.denoising_groups, self.label_noise, self.box_noise
            )
        aux_head = self.encoder_aux_head and self.training
        if not self.box_refine and dn is None and self.query_groups == 1 and not aux_head:
            return super().forward(pixel_values, pixel_mask)  # the paper's model, exactly

        features, mask = self.backbone(pixel_values, pixel_mask)[-1]
        pos = self.position_encoding(mask).to(features.dtype)
        memory, key_mask, pos_seq = self.transformer.encode(self.input_proj(features), mask, pos)
        proposals = self.encoder_proposals(memory, mask) if self.two_stage or aux_head else None
        memory, memory_pos = self.transformer.decoder_inputs(memory, pos_seq)
        if self.detach_memory:
            memory = memory.detach()
        b, d = memory.shape[0], memory.shape[-1]
        num_matching = self.num_queries * groups
        num_dn = dn.num_queries if dn is not None else 0

        tgt = memory.new_zeros(b, num_dn + num_matching, d)
        if self.two_stage:
            ref, content, prior = self.encoder_proposals.select(proposals, mask, num_matching)
            tgt = torch.cat([tgt[:, :num_dn], content], dim=1)
            # Denoising queries have no proposal: their prior is 0.
            prior = torch.cat([prior.new_zeros(b, num_dn, prior.shape[-1]), prior], dim=1)
        elif self.box_refine:
            ref = self.anchor_embed.weight[:num_matching].sigmoid()[None].expand(b, -1, -1)
        if dn is not None:
            tgt = torch.cat([self.label_embed(dn.labels), tgt[:, num_dn:]], dim=1)
        if self.box_refine:
            if dn is not None:
                ref = torch.cat([dn.boxes, ref], dim=1)
        else:
            # Without refinement the positional queries are the same at every layer.
            query_pos = self.query_embed.weight[:num_matching][None].expand(b, -1, -1)
            if dn is not None:
                dn_pos = self.ref_point_head(box_sine_embedding(dn.boxes, d))
                query_pos = torch.cat([dn_pos, query_pos], dim=1)
        attn_mask = query_attention_mask(
            self.num_queries, groups, dn.num_groups if dn else 0, dn.pad if dn else 0, memory.device
        )

        decoder = self.transformer.decoder
        logits, boxes = [], []
        box_heads = [*getattr(self, "layer_bbox_embed", []), self.bbox_embed]
        for i, layer in enumerate(decoder.layers):
            if self.box_refine:
                query_pos = self.ref_point_head(box_sine_embedding(ref, d))
            tgt = layer(tgt, memory, key_mask, memory_pos, query_pos, attn_mask)
            hidden = decoder.norm(tgt)
            logits.append(self.class_embed(hidden) + (prior if self.class_prior else 0))
            if self.box_refine:
                box = (box_heads[i](hidden) + inverse_sigmoid(ref)).sigmoid()
                # As in Deformable DETR: each layer refines the last one's box, gradients stay local.
                ref = box.detach()
            else:
                box = self.bbox_embed(hidden).sigmoid()
            boxes.append(box)
        out = self._split_outputs(torch.stack(logits), torch.stack(boxes), num_dn, groups, dn)
        if proposals is not None and self.training:
            out["enc_outputs"] = {k: proposals[k] for k in ("pred_logits", "pred_boxes", "cells")}
        return out

    def _split_outputs(self, logits: Tensor, boxes: Tensor, num_dn: int, groups: int, dn) -> dict:
        """Cut the [L, B, N, *] stacks into the dn part and one output dict per query group."""

        q = self.num_queries
        chunks = [
            self.layer_outputs(
                logits[:, :, num_dn + g * q : num_dn + (g + 1) * q],
                boxes[:, :, num_dn + g * q : num_dn + (g + 1) * q],
            )
            for g in range(groups)
        ]
        out = chunks[0]
        if groups > 1:
            out["group_outputs"] = chunks[1:]
        if dn is not None:
            out["dn_outputs"] = self.layer_outputs(logits[:, :, :num_dn], boxes[:, :, :num_dn])
            out["dn_queries"] = dn
        return out
