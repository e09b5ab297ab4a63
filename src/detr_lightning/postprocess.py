"""The public post-processing API (``from detr_lightning.postprocess import PostProcess``);
the code lives in :mod:`detr_lightning.detr.postprocess`."""

from detr_lightning.detr.postprocess import PostProcess

__all__ = ["PostProcess"]
