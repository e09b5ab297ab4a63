"""Dropout whose mask is cheap to draw on the CPU, for the transformer's training step.

On the CPU, ``torch.nn.functional.dropout`` draws its mask with ``bernoulli_``, one generator
call per element, which makes the dropouts of DETR's transformer (FFN, residuals and attention
weights: about 20 M elements for two 512² images) one of its costliest parts. Here the mask
comes from full-range 64-bit random integers, each split into four 16-bit lanes compared with
a threshold: a quarter of a generator call per element. Each element is dropped independently
with probability ``round(p * 2**16) / 2**16`` (0.1 becomes 0.1000061) and the kept ones are
scaled by ``1 / (1 - p)``, as ``nn.Dropout`` does. The masks come from torch's generator, so
``torch.manual_seed`` / ``seed_everything`` still make runs repeatable, but they are not the
masks ``nn.Dropout`` would draw. On other devices, and under ``torch.compile`` (which cannot
trace the in-place draw and makes its own fused masks), ``torch.nn.functional.dropout`` runs
(CUDA's kernel is fused and already fast).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_LANES = 2**16


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device) -> Tensor:
    """A bool tensor of ``shape``, each element False (dropped) independently with probability
    ``p`` rounded to a multiple of 2**-16, drawn from torch's default generator."""
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device)
    words.random_(-(2**63), None)  # every bit uniform
    lanes = words.view(torch.int16)[:n].view(shape)  # uniform over [-2**15, 2**15)
    return lanes >= round(p * _LANES) - _LANES // 2


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)`` with the cheap mask on the CPU (module docstring)."""
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0 or torch.compiler.is_compiling():
        return F.dropout(x, p, training)
    scale = keep_mask(x.shape, p, x.device).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * scale


class Dropout(nn.Dropout):
    """``nn.Dropout`` drawing its mask with :func:`dropout` (same arguments and repr)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace:
            return super().forward(x)
        return dropout(x, self.p, self.training)
