"""What every DETR-style detector shares: :class:`SetDetector` and its two steps that
extensions reuse, :meth:`SetDetector.encode` (image -> :class:`EncodedImage`) and
:meth:`SetDetector.layer_outputs` (per-layer predictions -> the output dict); the box
:class:`MLP`. The paper's detector (learned queries) is :class:`~detr_lightning.detr.model.DETR`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from detr_lightning.detr.class_scoring import SoftmaxScoring, scoring_or_default
from detr_lightning.detr.transformer import Transformer

Targets = list[dict[str, Tensor]]
"""Per-image target dicts: ``labels`` [T] int64, ``boxes`` [T, 4] normalised cxcywh, ..."""


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(
            nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:], strict=True)
        )

    def forward(self, x: Tensor) -> Tensor:
        """x [..., input_dim] -> [..., output_dim]."""
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


@dataclass
class EncodedImage:
    """What the encoder hands to the decoder, and what extensions (mask head, proposals) read.

    Attributes:
        features: the backbone's ``(features [B, C, h, w], mask [B, h, w] bool True = real)``
            per returned stage, finest first; the last one is what the transformer reads.
        memory: [B, S = h*w, d] encoder output (batch-first sequence).
        key_mask: [B, S] bool, True on real tokens.
        pos: [B, S, d] spatial encoding as a sequence (None without position encoding).
    """

    features: list[tuple[Tensor, Tensor]]
    memory: Tensor
    key_mask: Tensor
    pos: Tensor | None

    @property
    def mask(self) -> Tensor:
        """[B, h, w] bool padding mask of the feature map the transformer reads."""
        return self.features[-1][1]


class SetDetector(nn.Module):
    """What every DETR-style detector here shares: backbone, position encoding, transformer,
    input projection, class head and 3-layer box MLP, the encoder pass and the output dict.
    :class:`DETR` adds the paper's learned object queries; extensions supply other queries.

    Args:
        backbone: a :class:`~detr_lightning.detr.backbone.FeatureBackbone` (``num_channels``).
        position_encoding: maps a mask [B, h, w] to an encoding [B, d, h, w]; None: no spatial
            encoding (the transformer's ``encoder_pos`` and ``decoder_pos`` are then "none").
        transformer: encoder-decoder with ``d_model`` = d.
        num_classes: real classes.
        num_queries: object queries (detection slots) per image.
        aux_loss: also return the predictions of every decoder layer but the last.
        scoring: the class scoring shared with the matcher, criterion and post-processing: it
            sets the class head's columns and start (None: the paper's softmax, ``num_classes
            + 1`` columns, the last "no object";
            :class:`~detr_lightning.detr.class_scoring.SoftmaxScoring`).
    """

    def __init__(
        self,
        backbone: nn.Module,
        position_encoding: nn.Module | None,
        transformer: Transformer,
        num_classes: int,
        num_queries: int = 100,
        aux_loss: bool = True,
        scoring: SoftmaxScoring | None = None,
    ) -> None:
        super().__init__()
        if position_encoding is not None and not isinstance(position_encoding, nn.Module):
            raise TypeError(
                f"position_encoding: expected a module (or None: no spatial encoding), got "
                f"{type(position_encoding).__name__} {position_encoding!r}. A posenc row or "
                "model.net.position_encoding key on a preset without a spatial encoding "
                "(model.net.position_encoding: null) would have no effect: give the whole node "
                "with its _target_, or drop the row."
            )
        d = transformer.d_model
        self.backbone = backbone
        self.position_encoding = position_encoding
        self.transformer = transformer
        self.input_proj = nn.Conv2d(backbone.num_channels, d, kernel_size=1)
        self.scoring = scoring_or_default(scoring)
        self.class_embed = nn.Linear(d, self.scoring.num_logits(num_classes))
        self.scoring.init_class_head(self.class_embed)
        self.bbox_embed = MLP(d, d, 4, 3)
        self.num_classes = num_classes
        self.num_queries = num_queries
        self.aux_loss = aux_loss

    def init_class_head(self) -> None:
        """(Re-)initialise the class head (torch's Linear init, then the scoring's start):
        fine-tuning on a new label set replaces a release's head with this one. Extensions with
        a class-head prior override it."""
        self.class_embed.reset_parameters()
        self.scoring.init_class_head(self.class_embed)

    def encode(self, pixel_values: Tensor, pixel_mask: Tensor | None = None) -> EncodedImage:
        """Backbone, position encoding, input projection and encoder.

        Args:
            pixel_values: [B, 3, H, W] float, ImageNet-normalised, padded to a common size.
            pixel_mask: [B, H, W] bool, True on real pixels (None = no padding).
        """
        features = self.backbone(pixel_values, pixel_mask)
        src, mask = features[-1]
        pos = None
        if self.position_encoding is not None and self.transformer.reads_pos:
            pos = self.position_encoding(mask).to(src.dtype)
        memory, key_mask, pos_seq = self.transformer.encode(self.input_proj(src), mask, pos)
        return EncodedImage(features, memory, key_mask, pos_seq)

    def layer_outputs(self, logits: Tensor, boxes: Tensor) -> dict[str, Any]:
        """Per-layer predictions -> the output dict.

        Args:
            logits: [L, B, Q, K] class logits of every decoder layer.
            boxes: [L, B, Q, 4] normalised cxcywh boxes of every decoder layer.
        Returns:
            ``pred_logits``/``pred_boxes`` of the last layer and, with ``aux_loss``,
            ``aux_outputs``: one such dict per earlier layer.
        """
        out: dict[str, Any] = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [
                {"pred_logits": lg, "pred_boxes": bx}
                for lg, bx in zip(logits[:-1], boxes[:-1], strict=True)
            ]
        return out

    def forward_with_hidden(
        self, pixel_values: Tensor, pixel_mask: Tensor | None = None, targets: Targets | None = None
    ) -> tuple[dict[str, Any], EncodedImage, Tensor]:
        """The extension point for heads that read the decoder's hidden states (the panoptic
        mask head, :class:`~detr_lightning.detr.segmentation.DETRsegm`): the forward's output
        dict, the :class:`EncodedImage` and hs [L, B, Q, d] (every decoder layer's output, the
        rows of the Q queries the output dict describes). Detectors that support such heads
        override it; the base class has no decoder of its own."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement forward_with_hidden(), which heads reading "
            "the decoder's hidden states (the panoptic mask head) need; use DETR or implement it"
        )
