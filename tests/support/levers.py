"""Tiny ConvergenceDETR models and batches for the lever tests."""

from __future__ import annotations

from functools import partial

import torch

from detr_lightning.convergence.compact_trunk import CompactBackbone
from detr_lightning.convergence.conv_proposals import ConvProposals
from detr_lightning.convergence.denoising import Denoiser
from detr_lightning.convergence.dims import ModelDims
from detr_lightning.convergence.focal_scoring import FocalScoring
from detr_lightning.convergence.model import ConvergenceDETR
from detr_lightning.convergence.proposals import EncoderProposals
from detr_lightning.convergence.queries import AnchorQueries, LearnedQueries, ProposalQueries
from detr_lightning.convergence.refinement import BoxRefinement
from detr_lightning.detr.backbone import Backbone
from detr_lightning.detr.class_scoring import SoftmaxScoring
from detr_lightning.detr.position_encoding import PositionEmbeddingSine
from detr_lightning.detr.transformer import Transformer


def parts(backbone=None, encoder_layers: int = 1, decoder_layers: int = 3, decoder_pos="attn"):
    """(backbone, position encoding, transformer) of width 32."""
    torch.manual_seed(0)
    transformer = Transformer(
        d_model=32,
        nhead=4,
        num_encoder_layers=encoder_layers,
        num_decoder_layers=decoder_layers,
        dim_feedforward=64,
        dropout=0.0,
        decoder_pos=decoder_pos,
    )
    return backbone or Backbone("resnet18"), PositionEmbeddingSine(16), transformer


def learned(groups: int = 1):
    return partial(LearnedQueries, groups=groups)


def anchors(groups: int = 1):
    return partial(AnchorQueries, groups=groups)


def proposals(head: str = "conv", class_prior: bool = False, **head_kwargs):
    factory = ConvProposals if head == "conv" else EncoderProposals
    return partial(ProposalQueries, head=partial(factory, **head_kwargs), class_prior=class_prior)


def denoiser(groups: int = 2):
    return partial(Denoiser, groups=groups)


REFINE = BoxRefinement


def model(backbone=None, encoder_layers: int = 1, decoder_layers: int = 3, **kwargs):
    """ConvergenceDETR with 3 classes, 5 queries unless given, and the given components."""
    kwargs.setdefault("num_queries", 5)
    # A deformable cross-attention reads no keys: no spatial encoding on them (as its config).
    decoder_pos = "none" if kwargs.get("cross_attention") else "attn"
    return ConvergenceDETR(
        *parts(backbone, encoder_layers, decoder_layers, decoder_pos), num_classes=3, **kwargs
    )


def compact_model(backbone=None, **kwargs):
    """The shapes preset's shape at test size: compact trunk (unless ``backbone`` is given), no
    encoder layer, two-stage conv proposals (box voting as conf/proposal_head/conv.yaml, the
    preset's dilated tower) with box refinement, focal."""
    kwargs.setdefault("queries", proposals("conv", box_vote=0.6, tower_dilation=[1, 3]))
    kwargs.setdefault("box_refinement", REFINE)
    return model(backbone or CompactBackbone(width=16), 0, 2, scoring=FocalScoring(), **kwargs)


def batch(width: int = 96):
    pixel_values = torch.randn(2, 3, 64, width)
    pixel_mask = torch.ones(2, 64, width, dtype=torch.bool)
    pixel_mask[1, :, 64:] = False
    targets = [
        {
            "labels": torch.tensor([1, 2]),
            "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.5, 0.3, 0.4]]),
        },
        {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.5, 0.5]])},
    ]
    return pixel_values, pixel_mask, targets


def cells(h: int, w: int, real_w: int | None = None) -> torch.Tensor:
    """The [1, h*w, 4] cxcywh cells of a one-image h x w map whose first real_w columns are real."""
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    mask[:, :, : real_w or w] = True
    return EncoderProposals.cells(mask)


def dims(**overrides) -> ModelDims:
    """ModelDims of a small softmax model (width 8, 4 queries, 3 classes, 2 decoder layers, 2
    heads), with ``overrides``."""
    sizes = dict(d_model=8, num_queries=4, num_classes=3, num_logits=4, scoring=SoftmaxScoring(),
                 num_decoder_layers=2, nhead=2)  # fmt: skip
    return ModelDims(**{**sizes, **overrides})
