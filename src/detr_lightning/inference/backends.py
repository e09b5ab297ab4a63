"""What predict runs, per ``backend=``: the network and how its outputs become detections and
panoptic segments, with the label map and names they are reported under.

* ``torch``: the checkpoint's or release's model (:func:`~detr_lightning.inference.loading.load_detector`)
  through the inference graph (``speed``: folded BatchNorms, channels-last, bf16, compile);
* ``onnxruntime``: an exported .onnx (:class:`~detr_lightning.inference.onnx_runtime.OnnxDetector`),
  whose metadata holds the label map, the names, the class scoring and the panoptic settings.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from detr_lightning.detr.class_scoring import SoftmaxScoring
from detr_lightning.inference.panoptic_output import PanopticWriter


@dataclass
class PredictBackend:
    """The pieces :func:`~detr_lightning.inference.runner.run_predictions` takes.

    Attributes:
        forward: ``(pixel_values [B, 3, H, W], pixel_mask [B, H, W]) -> outputs``.
        postprocess: outputs and original sizes [B, 2] -> absolute xyxy detections.
        scoring: the model's class scoring.
        category_ids, names: label -> the dataset's category id / name (None: ids only).
        source: the weights' path (images.json's ``info.weights``).
        device: where the batches go.
        panoptic: its writer for a panoptic model, else None.
    """

    forward: Callable[..., Any]
    postprocess: Callable[..., Any]
    scoring: SoftmaxScoring
    category_ids: Sequence[int]
    names: Sequence[str] | None
    source: str
    device: torch.device
    panoptic: PanopticWriter | None = None


def torch_backend(
    cfg: DictConfig, datamodule: Any, device: torch.device, panoptic_folder: str
) -> PredictBackend:
    """``backend=torch``: the model of ``ckpt_path`` / ``model.pretrained`` on ``device``."""
    from detr_lightning.detr.class_scoring import scoring_of
    from detr_lightning.detr.segmentation import DETRsegm
    from detr_lightning.inference.fast_graph import prepare_for_inference
    from detr_lightning.inference.loading import load_detector
    from detr_lightning.inference.panoptic_output import panoptic_writer, thing_map
    from detr_lightning.utils.cpu_precision import warn_if_cpu_emulates

    detector = load_detector(cfg, datamodule, device)
    ids, names = detector.category_ids, detector.names
    speed = cfg.get("speed", {})
    warn_if_cpu_emulates(speed.get("dtype"), device, "speed.dtype")
    net = detector.model.net
    scoring = scoring_of(net)
    panoptic = None
    if isinstance(net, DETRsegm):
        settings = OmegaConf.select(cfg, "model.panoptic.postprocess")
        things = thing_map(ids, detector.categories)
        panoptic = panoptic_writer(settings, things, ids, names, scoring, panoptic_folder)
    return PredictBackend(prepare_for_inference(net, **speed), detector.model.detections,
                          scoring, ids, names, detector.source, device, panoptic)  # fmt: skip


def onnx_backend(cfg: DictConfig, providers: list | None, panoptic_folder: str) -> PredictBackend:
    """``backend=onnxruntime``: ``onnx=`` with ONNX Runtime's ``providers``; the batches stay on
    the CPU (ONNX Runtime copies them to its provider)."""
    from hydra.utils import instantiate

    from detr_lightning.data import eval_transform_record as recorded
    from detr_lightning.inference.onnx_runtime import OnnxDetector, exported_scoring
    from detr_lightning.inference.panoptic_output import (
        exported_panoptic_settings,
        panoptic_writer,
    )

    session = OnnxDetector(cfg.onnx, providers)
    meta, source = session.metadata, os.fspath(cfg.onnx)
    recorded.warn_if_different(meta.get(recorded.KEY), recorded.transform_record(cfg.get("data")),
                               f"onnx={source}")  # fmt: skip
    ids = [int(i) for i in meta["label_to_category_id"]]
    names = meta.get("category_names")
    postprocess = instantiate(cfg.model.postprocess)
    postprocess.scoring = scoring = exported_scoring(meta, source)
    panoptic = None
    if session.panoptic:
        things = {int(label): bool(thing) for label, thing in meta["is_thing_map"].items()}
        settings = exported_panoptic_settings(
            OmegaConf.select(cfg, "model.panoptic.postprocess"), meta.get("panoptic_postprocess"),
            source,
        )  # fmt: skip
        panoptic = panoptic_writer(settings, things, ids, names, scoring, panoptic_folder)
    return PredictBackend(session, postprocess, scoring, ids, names, source, torch.device("cpu"),
                          panoptic)  # fmt: skip
