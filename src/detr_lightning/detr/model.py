"""DETR: backbone, position encoding, transformer, learned queries, class head and 3-layer box
MLP, on :class:`~detr_lightning.detr.set_detector.SetDetector` (what extensions share)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from detr_lightning.detr.backbone import Backbone
from detr_lightning.detr.position_encoding import build_position_encoding
from detr_lightning.detr.set_detector import EncodedImage, SetDetector, Targets
from detr_lightning.detr.transformer import Transformer


class DETR(SetDetector):
    """Set-prediction detector: ``num_queries`` learned queries decoded against image features.

    Arguments as :class:`SetDetector`'s but ``scoring``: the paper's softmax, so the logits have
    ``num_classes + 1`` columns, the last "no object".
    """

    def __init__(
        self,
        backbone: nn.Module,
        position_encoding: nn.Module,
        transformer: Transformer,
        num_classes: int,
        num_queries: int = 100,
        aux_loss: bool = True,
    ) -> None:
        super().__init__(
            backbone, position_encoding, transformer, num_classes, num_queries, aux_loss
        )
        self.query_embed = nn.Embedding(num_queries, transformer.d_model)

    def forward(
        self, pixel_values: Tensor, pixel_mask: Tensor | None = None, targets: Targets | None = None
    ) -> dict[str, Any]:
        """Detect objects.

        Args:
            pixel_values: [B, 3, H, W] float, ImageNet-normalised, padded to a common size.
            pixel_mask: [B, H, W] bool, True on real pixels (None = no padding).
            targets: ignored here; training-only extensions read them, and the LightningModule
                passes them in training whichever model it holds.

        Returns:
            ``pred_logits`` [B, Q, num_classes + 1] (unnormalised, last column "no object"),
            ``pred_boxes`` [B, Q, 4] normalised cxcywh in [0, 1] relative to each image's unpadded
            size, and, when ``aux_loss``, ``aux_outputs``: a list of L-1 dicts with the same two
            keys, one per decoder layer but the last.
        """
        return self.heads(self.decode(self.encode(pixel_values, pixel_mask)))

    def forward_with_hidden(
        self, pixel_values: Tensor, pixel_mask: Tensor | None = None, targets: Targets | None = None
    ) -> tuple[dict[str, Any], EncodedImage, Tensor]:
        """:meth:`forward` that also returns the encoder's output and hs [L, B, Q, d]."""
        enc = self.encode(pixel_values, pixel_mask)
        hs = self.decode(enc)
        return self.heads(hs), enc, hs

    def decode(self, enc: EncodedImage) -> Tensor:
        """The learned queries decoded against the memory -> hs [L, B, Q, d]."""
        b = enc.memory.shape[0]
        query_pos = self.query_embed.weight[None].expand(b, -1, -1)
        return self.transformer.decode(enc.memory, enc.key_mask, enc.pos, query_pos)

    def heads(self, hs: Tensor) -> dict[str, Any]:
        """Class and box heads on every decoder layer's output hs [L, B, Q, d]."""
        return self.layer_outputs(self.class_embed(hs), self.bbox_embed(hs).sigmoid())


def build_detr(
    backbone: str = "resnet50",
    dilation: bool = False,
    num_classes: int = 91,
    num_queries: int = 100,
    hidden_dim: int = 256,
    nheads: int = 8,
    enc_layers: int = 6,
    dec_layers: int = 6,
    dim_feedforward: int = 2048,
    dropout: float = 0.1,
    pre_norm: bool = False,
    position_embedding: str = "sine",
    aux_loss: bool = True,
    pretrained_backbone: bool = False,
    train_backbone: bool = True,
    return_interm_layers: bool = False,
    **transformer_kwargs: Any,
) -> DETR:
    """Build DETR from flat hyper-parameters (the official ``main.py`` names).

    ``transformer_kwargs`` go to :class:`Transformer` (``use_ffn``, ``encoder_pos``,
    ``decoder_pos``, ``query_pos``). Defaults reproduce the paper's DETR-R50 on COCO (91 ids).
    ``return_interm_layers``: the backbone also returns layer1..layer3 (what the panoptic mask
    head, :class:`~detr_lightning.detr.segmentation.DETRsegm`, reads).
    """
    return DETR(
        Backbone(backbone, dilation, train_backbone, pretrained_backbone, return_interm_layers),
        build_position_encoding(position_embedding, hidden_dim),
        Transformer(
            d_model=hidden_dim,
            nhead=nheads,
            num_encoder_layers=enc_layers,
            num_decoder_layers=dec_layers,
            dim_feedforward=dim_feedforward,
            dropout=dropout,
            normalize_before=pre_norm,
            **transformer_kwargs,
        ),
        num_classes=num_classes,
        num_queries=num_queries,
        aux_loss=aux_loss,
    )
