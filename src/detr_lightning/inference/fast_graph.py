"""The inference graph of a trained detector: folded BatchNorms, channels-last, bf16, compile.

:func:`prepare_for_inference` is what ``predict`` (torch backend, ``speed.*`` in
conf/predict.yaml) and the benchmarks run. It changes the network in place and for inference
only (folding drops the BatchNorm buffers from the state dict): never train or checkpoint the
result. Every step is optional:

* ``fold_batchnorm``: bake each frozen BatchNorm into the convolution before it
  (:func:`~detr_lightning.detr.frozen_bn.fold_frozen_batchnorm`; same outputs within float
  rounding, one weight product less per convolution than the fused training graph);
* ``channels_last``: the backbone runs in NHWC layout (oneDNN's native layout on CPU);
* ``dtype=torch.bfloat16``: weights and activations in bf16 (CPUs with AVX512-BF16/AMX and
  GPUs run it at about twice the fp32 rate; AVX2-only CPUs emulate it, tens of times slower,
  and ``predict`` warns there: :mod:`detr_lightning.utils.cpu_precision`); inputs are cast on
  the way in and the outputs returned as float32, so post-processing (softmax, box scaling)
  stays in fp32. Boxes move by about 1e-3 of the image size: the same detections, scores
  differ in the third digit;
* ``compile``: ``torch.compile`` of the network with inductor's ``freezing`` (weights become
  constants, prepacked once for oneDNN); the first batch compiles (minutes on a small CPU), the
  first batch of a new size once more, then sizes are dynamic (see :mod:`detr_lightning.compile`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from detr_lightning.detr.backbone import FeatureBackbone


def fold_batchnorms(net: nn.Module) -> int:
    """Fold the frozen BatchNorms of every backbone in ``net`` (in place); returns how many
    backbones were folded."""
    backbones = [m for m in net.modules() if isinstance(m, FeatureBackbone)]
    for backbone in backbones:
        backbone.fold_batchnorm()
    return len(backbones)


def _to_float32(tree: Any) -> Any:
    if isinstance(tree, Tensor):
        return tree.float() if tree.is_floating_point() else tree
    if isinstance(tree, dict):
        return {k: _to_float32(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_float32(v) for v in tree)
    return tree


class InferenceForward(nn.Module):
    """``(pixel_values, pixel_mask) -> outputs`` of a prepared network: casts the image to the
    network's dtype and the floating outputs back to float32."""

    def __init__(self, net: nn.Module, dtype: torch.dtype | None, compiled: Callable | None):
        super().__init__()
        self.net, self.dtype = net, dtype
        self._compiled = (compiled,)  # a tuple: the compiled wrapper is not a second submodule

    def forward(self, pixel_values: Tensor, pixel_mask: Tensor | None = None) -> Any:
        if self.dtype is not None:
            pixel_values = pixel_values.to(self.dtype)
        run = self.net if self._compiled[0] is None else self._compiled[0]
        out = run(pixel_values, pixel_mask)
        return out if self.dtype is None else _to_float32(out)


def prepare_for_inference(
    net: nn.Module,
    fold_batchnorm: bool = True,
    channels_last: bool = True,
    dtype: str | torch.dtype | None = None,
    compile: bool = False,
) -> InferenceForward:
    """Prepare ``net`` (a DETR-style detector) for inference, in place (module docstring).

    Returns a module calling it like ``net(pixel_values, pixel_mask)``; eval mode, no
    gradients required. ``dtype``: None (float32), "bfloat16"/"float16" or a torch dtype.
    """
    net.eval().requires_grad_(False)
    if fold_batchnorm:
        fold_batchnorms(net)
    for backbone in (m for m in net.modules() if isinstance(m, FeatureBackbone)):
        backbone.channels_last = channels_last
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is not None and dtype != torch.float32:
        net.to(dtype)
    else:
        dtype = None
    # freezing: parameters become constants (folded, oneDNN weights prepacked once)
    compiled = torch.compile(net, options={"freezing": True}) if compile else None
    return InferenceForward(net, dtype, compiled).eval()
