"""DETR network: ResNet backbone, position encodings, transformer and detection heads."""

from detr_lightning.models.backbone import Backbone
from detr_lightning.models.detr import DETR, MLP, build_detr
from detr_lightning.models.position_encoding import (
    PositionEmbeddingLearned,
    PositionEmbeddingSine,
    build_position_encoding,
)
from detr_lightning.models.transformer import Transformer

__all__ = [
    "DETR",
    "MLP",
    "Backbone",
    "PositionEmbeddingLearned",
    "PositionEmbeddingSine",
    "Transformer",
    "build_detr",
    "build_position_encoding",
]
