"""Inference on any images: discovery (:mod:`.image_search`) and batching (:mod:`.images`), detector loading
(:mod:`.loading`), the prediction loop (:mod:`.runner`), COCO results (:mod:`.results`),
drawing (:mod:`.draw`), attention capture and figures (:mod:`.attention`,
:mod:`.attention_plot`), the fast inference graph ``predict`` runs (:mod:`.fast_graph`),
ONNX export (:mod:`.onnx_export`) and ONNX Runtime (:mod:`.onnx_runtime`).

The entry points are ``detr_lightning.predict``, ``detr_lightning.visualize`` and
``detr_lightning.export``. Modules here import torch lazily where it matters for ``--help``.
"""

from detr_lightning.inference.image_search import IMAGE_EXTENSIONS, ImageRecord, find_images

__all__ = ["IMAGE_EXTENSIONS", "ImageRecord", "find_images"]
