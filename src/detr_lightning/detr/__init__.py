"""The paper's DETR (Carion et al. 2020) and nothing else: backbone, position encodings,
transformer, model, Hungarian matcher, class scoring (softmax and "no object"), set criterion,
post-processing, the panoptic mask head (Sec. 4.4) and the conversion of the official release
files. Nothing here imports :mod:`detr_lightning.convergence`."""

from detr_lightning.detr.backbone import Backbone
from detr_lightning.detr.class_scoring import SoftmaxScoring
from detr_lightning.detr.criterion import SetCriterion
from detr_lightning.detr.criterion_args import base_loss_name
from detr_lightning.detr.mask_head import MaskHeadSmallConv, MHAttentionMap
from detr_lightning.detr.matcher import HungarianMatcher
from detr_lightning.detr.model import DETR, build_detr
from detr_lightning.detr.panoptic_postprocess import PostProcessPanoptic, PostProcessSegm
from detr_lightning.detr.position_encoding import (
    PositionEmbeddingLearned,
    PositionEmbeddingSine,
    build_position_encoding,
)
from detr_lightning.detr.postprocess import PostProcess
from detr_lightning.detr.segmentation import DETRsegm
from detr_lightning.detr.set_detector import MLP
from detr_lightning.detr.transformer import Transformer

__all__ = [
    "DETR",
    "DETRsegm",
    "MLP",
    "Backbone",
    "HungarianMatcher",
    "MHAttentionMap",
    "MaskHeadSmallConv",
    "PositionEmbeddingLearned",
    "PositionEmbeddingSine",
    "PostProcess",
    "PostProcessPanoptic",
    "PostProcessSegm",
    "SetCriterion",
    "SoftmaxScoring",
    "Transformer",
    "base_loss_name",
    "build_detr",
    "build_position_encoding",
]
