"""The public post-processing API (``from detr_lightning.postprocess import PostProcess``);
the code lives in :mod:`detr_lightning.detr.postprocess` (boxes) and
:mod:`detr_lightning.detr.panoptic_postprocess` (masks, panoptic segmentation)."""

from detr_lightning.detr.panoptic_postprocess import PostProcessPanoptic, PostProcessSegm
from detr_lightning.detr.postprocess import PostProcess

__all__ = ["PostProcess", "PostProcessPanoptic", "PostProcessSegm"]
