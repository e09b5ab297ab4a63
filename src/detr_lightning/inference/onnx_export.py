"""Export the detector to ONNX and check it against PyTorch with ONNX Runtime.

The graph is the inference forward only: ``pixel_values`` [B, 3, H, W] float32 and
``pixel_mask`` [B, H, W] bool (True = real pixel) in, ``pred_logits`` [B, Q, K] and
``pred_boxes`` [B, Q, 4] (normalised cxcywh) out, with B, H and W dynamic; a panoptic model
(``DETRsegm``) adds ``pred_masks`` [B, Q, H/4, W/4] (mask logits on the padded canvas). What
stays in Python: the Hungarian matcher and the losses (training only: they need targets and
scipy's ``linear_sum_assignment``, which has no ONNX operator), the auxiliary decoder outputs
(training losses), and the post-processing (softmax / top-k, box scaling, and the panoptic
merge, which loops over a data-dependent number of segments).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

log = logging.getLogger(__name__)

INPUT_NAMES = ("pixel_values", "pixel_mask")
OUTPUT_NAMES = ("pred_logits", "pred_boxes")
MASK_OUTPUT = "pred_masks"


class DetectorGraph(nn.Module):
    """``net(pixel_values, pixel_mask)`` -> (pred_logits, pred_boxes[, pred_masks]): the
    exported signature (the auxiliary outputs are dropped, so the exporter prunes nothing it
    needs); ``output_names`` names them."""

    def __init__(self, net: nn.Module) -> None:
        from detr_lightning.detr.segmentation import DETRsegm

        super().__init__()
        self.net = net
        self.output_names = OUTPUT_NAMES + ((MASK_OUTPUT,) if isinstance(net, DETRsegm) else ())

    def forward(self, pixel_values: Tensor, pixel_mask: Tensor) -> tuple[Tensor, ...]:
        out = self.net(pixel_values, pixel_mask)
        return tuple(out[name] for name in self.output_names)


def _nearest_by_index(x: Tensor, size: Sequence[Any]) -> Tensor:
    """``F.interpolate(x, size, mode="nearest")`` for [N, C, H, W] as an index gather with
    PyTorch's own index rule, ``min(floor(i * (in / out)), in - 1)`` in float32.

    ONNX ``Resize`` computes ``i / (out / in)`` instead; the two round differently when
    ``i * in / out`` is an integer (e.g. a padding edge at a multiple of the stride), which
    flipped mask cells and moved outputs by 0.1 in ONNX Runtime. The gather is exact."""
    for dim, out in zip((2, 3), size, strict=True):
        length = x.shape[dim]
        scale = torch.tensor(length, dtype=torch.float32) / out
        idx = (torch.arange(out, device=x.device, dtype=torch.float32) * scale).floor()
        x = x.index_select(dim, idx.to(torch.int64).clamp(max=length - 1))
    return x


@contextlib.contextmanager
def exact_nearest_resize() -> Iterator[None]:
    """While exporting, 4-D nearest resizes to a given ``size`` use :func:`_nearest_by_index`
    (the backbone's padding-mask resize, the compact trunk's top-down path); everything else
    goes to the real ``F.interpolate``. Eager results are identical (same index rule)."""
    original = F.interpolate

    def interpolate(input: Tensor, size: Any = None, scale_factor: Any = None,
                    mode: str = "nearest", *args: Any, **kwargs: Any) -> Tensor:  # fmt: skip
        if mode == "nearest" and size is not None and input.dim() == 4 and not args and not kwargs:
            return _nearest_by_index(input, tuple(size))
        return original(input, size, scale_factor, mode, *args, **kwargs)

    F.interpolate = interpolate
    try:
        yield
    finally:
        F.interpolate = original


def export_onnx(
    net: nn.Module,
    path: str | Path,
    example_size: tuple[int, int] = (256, 320),
    opset: int = 18,
    exporter: str = "dynamo",
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``net``'s inference graph to ``path`` (dynamic batch, height and width).

    Args:
        net: the detector (``DETR`` / ``ConvergenceDETR``, or either in ``DETRsegm``: then
            ``pred_masks`` is an output too), put in eval mode here.
        path: the .onnx file to write.
        example_size: (H, W) of the tracing input; batch 2, because torch.export specialises
            dimensions of size 1 into constants.
        opset: ONNX opset.
        exporter: "dynamo" (torch.export, the default of torch >= 2.9) or "torchscript" (the
            legacy tracer, deprecated in torch but faster to export).
        metadata: stored as JSON strings in the model's ``metadata_props`` (label map, class
            names, class scoring), so ``predict backend=onnxruntime`` needs no checkpoint.

    The weights are stored inside the one file. Only a model whose weights pass torch's
    large-model threshold (1.5 GB, below protobuf's 2 GB limit on one file) gets them in
    ``<path>.data`` next to it (logged as a warning): then the two files travel together.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in ("onnx_ir", "onnxscript"):  # one INFO line per rewritten initializer
        logging.getLogger(name).setLevel(logging.WARNING)
    graph = DetectorGraph(net.eval()).eval()
    h, w = example_size
    pixels = torch.randn(2, 3, h, w)
    mask = torch.ones(2, h, w, dtype=torch.bool)
    mask[1, :, w - w // 4 :] = False  # a padded image: the mask path is traced for real
    if exporter == "dynamo":
        dims = {0: "batch", 2: "height", 3: "width"}
        kwargs: dict[str, Any] = {
            "dynamo": True,
            "dynamic_shapes": {
                "pixel_values": dims,
                "pixel_mask": {0: "batch", 1: "height", 2: "width"},
            },  # fmt: skip
            # weights inside the .onnx (one self-contained file); torch still writes them to
            # "<path>.data" when they pass its large-model threshold (1.5 GB, under protobuf's 2 GB)
            "external_data": False,
        }
    elif exporter == "torchscript":
        kwargs = {
            "dynamo": False,
            "dynamic_axes": {"pixel_values": {0: "batch", 2: "height", 3: "width"},
                             "pixel_mask": {0: "batch", 1: "height", 2: "width"},
                             "pred_logits": {0: "batch"}, "pred_boxes": {0: "batch"},
                             MASK_OUTPUT: {0: "batch", 2: "mask_height", 3: "mask_width"}},
        }  # fmt: skip
    else:
        raise ValueError(f"exporter={exporter!r}: use dynamo or torchscript")
    with exact_nearest_resize(), torch.no_grad():
        torch.onnx.export(
            graph, (pixels, mask), str(path), input_names=list(INPUT_NAMES),
            output_names=list(graph.output_names), opset_version=opset, **kwargs,
        )  # fmt: skip
    if metadata:
        _write_metadata(path, metadata)
    external = external_data_files(path)
    if external:
        log.warning(
            "%s: the weights are too large for one ONNX file (protobuf's 2 GB limit) and are in "
            "%s next to it; copy them together", path, ", ".join(external),
        )  # fmt: skip
    return path


def external_data_files(path: str | Path) -> list[str]:
    """The external-data files ``path``'s initializers refer to ([] for a self-contained model)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    return sorted(
        {ExternalDataInfo(t).location for t in model.graph.initializer if uses_external_data(t)}
    )


def _write_metadata(path: Path, metadata: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(path))


def verify_onnx(
    net: nn.Module,
    path: str | Path,
    sizes: Sequence[tuple[int, int, int]] = ((2, 160, 224), (1, 224, 128)),
    seed: int = 0,
) -> dict[str, float]:
    """Max |ONNX Runtime - PyTorch| per output over random images of the given (B, H, W).

    Batches of more than one image pad the second image by a quarter of its width, so the
    padding-mask path is compared too. Returns ``{"pred_logits": d, "pred_boxes": d, "max": d}``
    (and ``"pred_masks": d`` for a panoptic model), and each output's scale, its max |PyTorch
    value|, as ``"<output>.scale"`` (what :func:`unfaithful_outputs` weighs the differences by).
    """
    from detr_lightning.inference.onnx_runtime import OnnxDetector

    session = OnnxDetector(path)
    graph = DetectorGraph(net.eval()).eval()
    gen = torch.Generator().manual_seed(seed)
    diffs = dict.fromkeys(graph.output_names, 0.0)
    for b, h, w in sizes:
        pixels = torch.randn(b, 3, h, w, generator=gen)
        mask = torch.ones(b, h, w, dtype=torch.bool)
        if b > 1:
            mask[1, :, w - w // 4 :] = False
            pixels[1, :, :, w - w // 4 :] = 0
        with torch.no_grad():
            reference = dict(zip(graph.output_names, graph(pixels, mask), strict=True))
        got = session(pixels, mask)
        if set(got) != set(reference):
            raise ValueError(f"{path}: outputs {sorted(got)}, the model has {sorted(reference)}")
        for name in graph.output_names:
            diff = (got[name].float() - reference[name].float()).abs().max().item()
            diffs[name] = max(diffs[name], diff)
            scale = reference[name].float().abs().max().item()
            diffs[f"{name}.scale"] = max(diffs.get(f"{name}.scale", 0.0), scale)
    diffs["max"] = max(diffs[name] for name in graph.output_names)
    return diffs


def compared_outputs(diffs: dict[str, float]) -> list[str]:
    """The output names in :func:`verify_onnx`'s ``diffs`` (not ``"max"``, not the scales)."""
    return [name for name in diffs if name != "max" and not name.endswith(".scale")]


def unfaithful_outputs(diffs: dict[str, float], atol: float, rtol: float) -> list[str]:
    """The outputs of :func:`verify_onnx`'s ``diffs`` that differ by more than ``atol + rtol x``
    their scale, described. Relative to the scale because float32 rounding is: an output of
    values ~20 (a confident class logit) differs from float64 by ~2e-4 in PyTorch itself, and
    ONNX Runtime, which adds and fuses in another order, by as much (tests/test_export.py)."""
    failed = []
    for name in compared_outputs(diffs):
        diff, scale = diffs[name], diffs.get(f"{name}.scale", 0.0)
        if diff > atol + rtol * scale:
            failed.append(f"{name} {diff:.2e} > {atol:g} + {rtol:g} x {scale:.3g}")
    return failed
