"""Run an exported detector with ONNX Runtime behind the PyTorch forward's interface."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_object
from torch import Tensor

from detr_lightning.detr.class_scoring import SoftmaxScoring
from detr_lightning.errors import MissingFileError
from detr_lightning.inference.onnx_export import INPUT_NAMES, MASK_OUTPUT, OUTPUT_NAMES
from detr_lightning.utils.config_check import ConfigError


def onnx_providers(device: str | None) -> list | None:
    """ONNX Runtime's execution providers for predict's ``device=``: None (its default: CUDA
    when available, then CPU) for ``auto``; the CPU's alone for ``cpu``; CUDA (on GPU N for
    ``cuda:N``) for ``cuda``, refused with a ConfigError where this onnxruntime build has no
    CUDA provider; ``mps`` and other names refused (no such provider is used here)."""
    import onnxruntime as ort

    if device in (None, "", "auto"):
        return None
    if device == "cpu":
        return ["CPUExecutionProvider"]
    kind, colon, index = str(device).partition(":")
    if kind == "cuda" and (not colon or index.isdigit()):  # "cuda:" names no GPU, as for torch
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError(
                f"device={device}: this onnxruntime has no CUDA provider (the onnxruntime-gpu "
                "package provides it). Fix: device=cpu or device=auto with backend=onnxruntime, "
                "or backend=torch"
            )
        return [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
    raise ConfigError(f"device={device}: backend=onnxruntime runs on auto, cpu, cuda or cuda:N")


class OnnxDetector:
    """``OnnxDetector(path)(pixel_values, pixel_mask)`` -> ``{"pred_logits", "pred_boxes"}``
    (and ``"pred_masks"`` for a panoptic model; CPU torch tensors), like ``net(...)`` without
    the auxiliary outputs.

    Args:
        path: an .onnx file written by :func:`~detr_lightning.inference.onnx_export.export_onnx`.
        providers: ONNX Runtime execution providers (default: CUDA when available, then CPU;
            :func:`onnx_providers` maps predict's ``device=``).
        threads: intra-op threads (None: ONNX Runtime's default, one per core).
    """

    def __init__(
        self, path: str | Path, providers: list | None = None, threads: int | None = None
    ) -> None:
        import onnxruntime as ort

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise MissingFileError(
                f"onnx={path}: no such file. Fix: write it with python -m detr_lightning.export"
            )
        if providers is None:
            available = ort.get_available_providers()
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                         if p in available]  # fmt: skip
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(path, options, providers=providers)
        inputs = [i.name for i in self.session.get_inputs()]
        if tuple(inputs) != INPUT_NAMES:
            raise ConfigError(f"onnx={path}: inputs {inputs}, expected {list(INPUT_NAMES)}")
        self.output_names = tuple(o.name for o in self.session.get_outputs())
        if self.output_names not in (OUTPUT_NAMES, OUTPUT_NAMES + (MASK_OUTPUT,)):
            raise ConfigError(
                f"onnx={path}: outputs {list(self.output_names)}, expected "
                f"{list(OUTPUT_NAMES)} (+ {MASK_OUTPUT}); write it with python -m "
                "detr_lightning.export"
            )
        self.path = path

    @property
    def panoptic(self) -> bool:
        """Whether the graph has the mask head's ``pred_masks`` output."""
        return MASK_OUTPUT in self.output_names

    @property
    def metadata(self) -> dict[str, Any]:
        """The JSON ``metadata_props`` written at export (label map, names, class scoring, ...)."""
        props = self.session.get_modelmeta().custom_metadata_map
        out = {}
        for key, value in props.items():
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
        return out

    def __call__(self, pixel_values: Tensor, pixel_mask: Tensor) -> dict[str, Tensor]:
        """pixel_values [B, 3, H, W] float32, pixel_mask [B, H, W] bool (any device)."""
        feeds = {
            "pixel_values": pixel_values.detach().float().cpu().contiguous().numpy(),
            "pixel_mask": pixel_mask.detach().bool().cpu().contiguous().numpy(),
        }
        outputs = self.session.run(list(self.output_names), feeds)
        return {
            name: torch.from_numpy(value)
            for name, value in zip(self.output_names, outputs, strict=True)
        }


def exported_scoring(metadata: dict[str, Any], source: str = "the .onnx file") -> SoftmaxScoring:
    """The class scoring an exported model's logits need (:mod:`detr_lightning.export` writes
    its class path as ``class_scoring``; exports of earlier versions carry only ``focal``),
    built with its defaults: post-processing reads only its probabilities and detections."""
    path = metadata.get("class_scoring")
    if path:
        try:
            scoring = get_object(str(path))
        except (ImportError, AttributeError, ValueError) as err:
            raise ValueError(
                f"{source}: metadata class_scoring={path!r} cannot be imported ({err}); install "
                "the package that defines it, or re-export the model with this one."
            ) from err
        if not (inspect.isclass(scoring) and hasattr(scoring, "detections")):
            raise ValueError(
                f"{source}: metadata class_scoring={path!r} is not a class scoring (a class "
                "with the methods of detr_lightning.detr.class_scoring.SoftmaxScoring); "
                "re-export the model."
            )
        return scoring()
    if metadata.get("focal"):
        from detr_lightning.convergence.focal_scoring import FocalScoring

        return FocalScoring()
    return SoftmaxScoring()
