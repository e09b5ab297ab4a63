"""The sizes a lever component needs from the model it plugs into."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from detr_lightning.detr.class_scoring import SoftmaxScoring


@dataclass(frozen=True)
class ModelDims:
    """Sizes handed to every lever component at construction (so its config node states only
    the lever's own settings).

    Attributes:
        d_model: transformer width.
        num_queries: matching queries per group.
        num_classes: real classes.
        num_logits: class-logit columns (the scoring's: ``num_classes`` for sigmoid heads,
            ``+1`` for the paper's softmax).
        scoring: the class scoring (:mod:`~detr_lightning.detr.class_scoring`), which also
            scores proposals and starts their class heads.
        num_decoder_layers: decoder layers.
        nhead: attention heads.
        backbone_stages: {stage name: channels} of the feature maps the backbone returns
            (finest first; the last is the one the input projection reads).
    """

    d_model: int
    num_queries: int
    num_classes: int
    num_logits: int
    scoring: SoftmaxScoring
    num_decoder_layers: int
    nhead: int = 8
    backbone_stages: Mapping[str, int] = field(default_factory=dict)
