"""Data pipeline: COCO-format detection and panoptic datasets, the paper's augmentation,
batching, shapes generator.

Exports resolve lazily so ``python -m detr_lightning.data.shapes`` starts without importing
torch.
"""

import importlib
from typing import Any

_EXPORTS = {
    "Batch": "collate",
    "collate": "collate",
    "make_collate_fn": "collate",
    "CocoDetectionDataset": "coco",
    "CocoPanopticDataset": "coco_panoptic",
    "DetrDataModule": "datamodule",
    "PanopticDataModule": "datamodule",
    "DatasetFormatError": "errors",
    "ImageLoadError": "errors",
    "make_eval_transforms": "transforms",
    "make_train_transforms": "transforms",
    "ensure_shapes_dataset": "shapes",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
