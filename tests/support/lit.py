"""A tiny LitDETR, fake batches and a quiet trainer for LightningModule tests."""

from __future__ import annotations

import functools

import lightning as L
import torch
from torch.utils.data import DataLoader

from detr_lightning.data.collate import Batch
from detr_lightning.detr import DETR, Backbone, Transformer, build_position_encoding
from detr_lightning.detr.postprocess import PostProcess
from detr_lightning.lit_module import LitDETR
from detr_lightning.loss import HungarianMatcher, SetCriterion

NUM_CLASSES = 3


def tiny_lit(
    num_queries: int = 5,
    layers: int = 2,
    last_stage: str = "layer2",
    num_classes: int = NUM_CLASSES,
    **kwargs,
) -> LitDETR:
    """A LitDETR small enough for several fits per test: d_model 32, ``layers`` decoder layers,
    ResNet-18 cut after ``last_stage``. The default "layer2" (stride 8, 0.7 M of the trunk's
    11 M parameters) leaves out layer3 and layer4, whose weights' gradients and AdamW updates
    are most of a CPU step; tests of stride 32 or of layer4's parameters ask for "layer4". With
    the default three classes, labels map to category ids 10, 20, 30."""
    net = DETR(
        Backbone("resnet18", pretrained=False, last_stage=last_stage),
        build_position_encoding("sine", 32),
        Transformer(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=layers,
                    dim_feedforward=64, dropout=0.0),
        num_classes=num_classes,
        num_queries=num_queries,
    )  # fmt: skip
    if num_classes == NUM_CLASSES:
        kwargs.setdefault("label_to_category_id", [10, 20, 30])
    return LitDETR(
        net,
        SetCriterion(num_classes, HungarianMatcher()),
        PostProcess(),
        functools.partial(torch.optim.AdamW, lr=1e-3, weight_decay=1e-4),
        num_classes=num_classes,
        **kwargs,
    )


def fake_batch(seed: int, size: int = 64, batch: int = 2) -> Batch:
    g = torch.Generator().manual_seed(seed)
    targets = []
    for i in range(batch):
        n = 1 + i % 3
        cxcy = torch.rand(n, 2, generator=g) * 0.5 + 0.25
        wh = torch.rand(n, 2, generator=g) * 0.3 + 0.1
        targets.append({
            "labels": torch.randint(0, NUM_CLASSES, (n,), generator=g),
            "boxes": torch.cat([cxcy, wh], 1),
            "image_id": torch.tensor(seed * 100 + i),
            "orig_size": torch.tensor([2 * size, 2 * size]),
            "size": torch.tensor([size, size]),
            "iscrowd": torch.zeros(n, dtype=torch.int64),
            "area": torch.full((n,), 100.0),
        })  # fmt: skip
    pixels = torch.randn(batch, 3, size, size, generator=g)
    return Batch(pixels, torch.ones(batch, size, size, dtype=torch.bool), targets)


def loader(n: int, offset: int = 0, size: int = 64) -> DataLoader:
    return DataLoader([fake_batch(offset + i, size=size) for i in range(n)], batch_size=None)


def quiet_trainer(tmp_path, **kwargs) -> L.Trainer:
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("logger", False)
    return L.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", devices=1,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        **kwargs,
    )  # fmt: skip
