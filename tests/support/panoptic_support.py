"""A tiny panoptic LitDETR (DETRsegm on a DETR or a ConvergenceDETR) and shapes panoptic data."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from detr_lightning.convergence.compact_trunk import CompactBackbone
from detr_lightning.data.datamodule import PanopticDataModule
from detr_lightning.data.shapes import generate_shapes_dataset
from detr_lightning.data.transforms import make_eval_transforms, make_train_transforms
from detr_lightning.detr import DETR, Transformer, build_position_encoding
from detr_lightning.detr.criterion import SetCriterion
from detr_lightning.detr.matcher import HungarianMatcher
from detr_lightning.detr.panoptic_postprocess import PostProcessPanoptic, PostProcessSegm
from detr_lightning.detr.postprocess import PostProcess
from detr_lightning.detr.segmentation import DETRsegm
from detr_lightning.evaluation.panoptic_evaluator import PanopticEvaluator
from detr_lightning.lit_module import LitDETR

NUM_CLASSES = 8  # the shapes panoptic split: 5 things + 3 stuff
WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_mask": 1.0, "loss_dice": 1.0}


def tiny_detector(cls: type = DETR, num_queries: int = 6, d: int = 32):
    """A DETR (or ConvergenceDETR) on a width-16 compact trunk returning its three levels."""
    return cls(
        CompactBackbone(width=16, return_interm_layers=True),
        build_position_encoding("sine", d),
        Transformer(d_model=d, nhead=4, num_encoder_layers=1, num_decoder_layers=2,
                    dim_feedforward=64, dropout=0.0),
        num_classes=NUM_CLASSES,
        num_queries=num_queries,
    )  # fmt: skip


def panoptic_evaluator_factory(threshold: float = 0.0) -> functools.partial:
    """What head=panoptic's ``model.panoptic`` node instantiates to."""
    return functools.partial(
        PanopticEvaluator,
        postprocess=functools.partial(PostProcessPanoptic, threshold=threshold, min_area=1),
        segm_postprocess=PostProcessSegm(),
    )


def tiny_panoptic_lit(cls: type = DETR, freeze_detr: bool = False, **kwargs) -> LitDETR:
    """LitDETR with the mask head, the mask losses and the panoptic evaluator (threshold 0:
    even an untrained model paints segments, so PQ has something to count)."""
    return LitDETR(
        tiny_detector(cls),
        SetCriterion(
            NUM_CLASSES,
            HungarianMatcher(),
            losses=("labels", "boxes", "cardinality", "masks"),
            weight_dict=WEIGHTS,
        ),  # fmt: skip
        PostProcess(),
        functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4),
        lr_backbone=1e-3,
        num_classes=NUM_CLASSES,
        segmentation=functools.partial(
            DETRsegm, freeze_detr=freeze_detr, matcher=HungarianMatcher()
        ),
        panoptic=panoptic_evaluator_factory(),
        **kwargs,
    )


def shapes_panoptic(tmp_path: Path, train: int = 4, val: int = 3) -> Path:
    return generate_shapes_dataset(tmp_path / "shapes", train=train, val=val)


def panoptic_datamodule(root: Path, batch_size: int = 2) -> PanopticDataModule:
    """The shapes panoptic split at 64-96 px, no workers."""
    ann = root / "annotations"
    return PanopticDataModule(
        root / "train", ann / "panoptic_train.json", root / "val", ann / "panoptic_val.json",
        root / "val", ann / "panoptic_val.json", batch_size=batch_size, num_workers=0,
        train_transforms=make_train_transforms([64, 80], 128, [64], (48, 64)),
        val_transforms=make_eval_transforms(80, 128),
    )  # fmt: skip
