"""Frozen BatchNorm applied inside the convolution before it, for training and for inference.

A frozen BatchNorm is the affine map ``y = x * s + t`` with ``s = gamma / sqrt(var + eps)`` and
``t = beta - mean * s`` (fixed statistics and affine, as in the paper). After a convolution it
equals one convolution with weight ``W * s`` (per output channel) and bias ``t``:

* :func:`fuse_frozen_batchnorm` (training; what :class:`~detr_lightning.detr.backbone.Backbone`
  does by default): every ``conv -> FrozenBatchNorm2d`` pair becomes a :class:`ConvFrozenBN`,
  which scales its weight by ``s`` at each call (a weight-sized product) instead of running two
  activation-sized passes forward and one backward; the BatchNorm keeps its buffers (the state
  dict keys and checkpoints are unchanged) and becomes an identity. The BatchNorm stays frozen:
  its statistics are never recomputed from the batch. Gradients of ``W`` are the same. On the
  CPU its 1x1 convolutions run with dilation 2, the same arithmetic for a 1x1 kernel, which
  routes them to oneDNN also in single-threaded processes (``ConvFrozenBN.forward``).
* :func:`fold_frozen_batchnorm` (inference: ``predict``, export): bakes ``W * s`` and ``t`` into
  a plain ``nn.Conv2d`` and drops the BatchNorm, so the graph has no normalisation left; the
  state dict keys change, so fold a copy that will not be trained or checkpointed.
"""

from __future__ import annotations

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d


def frozen_bn_affine(bn: FrozenBatchNorm2d) -> tuple[Tensor, Tensor]:
    """(scale [C], shift [C]) of a frozen BatchNorm: ``bn(x) = x * scale + shift``."""
    scale = bn.weight * (bn.running_var + bn.eps).rsqrt()
    return scale, bn.bias - bn.running_mean * scale


class FoldedFrozenBatchNorm2d(FrozenBatchNorm2d):
    """A FrozenBatchNorm2d whose map the :class:`ConvFrozenBN` before it applies: same buffers
    (and state dict keys), identity forward."""

    def forward(self, x: Tensor) -> Tensor:
        return x


class ConvFrozenBN(nn.Conv2d):
    """``bn(conv(x))`` for a frozen ``bn``, computed as one convolution with weight ``W * s`` and
    bias ``t`` (module docstring). Holds the convolution's own parameters under their names; the
    BatchNorm is referenced, not registered (it stays where it was, as an identity)."""

    frozen_bn: tuple[FoldedFrozenBatchNorm2d]

    @classmethod
    def from_pair(cls, conv: nn.Conv2d, bn: FoldedFrozenBatchNorm2d) -> ConvFrozenBN:
        with torch.device("meta"):  # parameters come from ``conv``; nothing to allocate
            fused = cls(
                conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                conv.padding, conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
            )  # fmt: skip
        fused.weight, fused.bias = conv.weight, conv.bias  # the same Parameter objects
        fused.train(conv.training)
        fused.frozen_bn = (bn,)  # a tuple: not a submodule, so no duplicate state dict keys
        return fused

    def fused_weight_and_bias(self) -> tuple[Tensor, Tensor]:
        """(``W * s`` [C_out, C_in/groups, k, k], ``t`` [C_out]): the one convolution that equals
        ``bn(conv(x))`` (the convolution's own bias, if any, scaled into ``t``)."""
        scale, shift = frozen_bn_affine(self.frozen_bn[0])
        if self.bias is not None:
            shift = shift + self.bias * scale
        return self.weight * scale.reshape(-1, 1, 1, 1), shift

    def forward(self, x: Tensor) -> Tensor:
        weight, shift = self.fused_weight_and_bias()
        pointwise = self.kernel_size == (1, 1) and self.dilation == (1, 1)
        if pointwise and x.device.type == "cpu" and self.padding_mode == "zeros":
            # A 1x1 kernel has no taps to spread, so dilation 2 computes the same convolution;
            # it makes PyTorch choose oneDNN, which in a single-threaded process it otherwise
            # skips for 1x1 kernels in favour of a native kernel that takes twice the time.
            return F.conv2d(x, weight, shift, self.stride, self.padding, 2, self.groups)
        return self._conv_forward(x, weight, shift)

    def folded(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` with ``W * s`` and ``t`` baked in (no gradient)."""
        with torch.no_grad():
            weight, shift = self.fused_weight_and_bias()
            conv = nn.Conv2d(
                self.in_channels, self.out_channels, self.kernel_size, self.stride,
                self.padding, self.dilation, self.groups, True, self.padding_mode,
                device=self.weight.device, dtype=self.weight.dtype,
            )  # fmt: skip
            conv.weight.copy_(weight)
            conv.bias.copy_(shift)
        conv.requires_grad_(False)
        return conv.train(self.training)


class FrozenBNLeafTracer(torch.fx.Tracer):
    """Records frozen BatchNorms and fused convolutions as module calls instead of tracing
    into their arithmetic."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        leaf = isinstance(m, FrozenBatchNorm2d | ConvFrozenBN)
        return leaf or super().is_leaf_module(m, module_qualified_name)


def _graph(module: nn.Module) -> torch.fx.Graph:
    if isinstance(module, torch.fx.GraphModule):
        return module.graph
    return FrozenBNLeafTracer().trace(module)


def conv_bn_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """``(conv name, bn name)`` of every ``nn.Conv2d`` whose output feeds only a plain
    ``FrozenBatchNorm2d``, read off the module's FX graph (the module's own when it is a
    ``GraphModule``; otherwise traced, e.g. a ResNet trunk)."""
    pairs = []
    for node in _graph(module).nodes:
        if node.op != "call_module" or not node.args:
            continue
        prev = node.args[0]
        if not isinstance(prev, torch.fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        bn, conv = module.get_submodule(node.target), module.get_submodule(prev.target)
        if type(bn) is FrozenBatchNorm2d and type(conv) is nn.Conv2d:
            pairs.append((prev.target, node.target))
    return pairs


def _replace(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def fuse_frozen_batchnorm(module: nn.Module) -> int:
    """Turn every ``conv -> FrozenBatchNorm2d`` pair of ``module`` into a :class:`ConvFrozenBN`
    (in place; module docstring). Parameters, their ``requires_grad`` and the state dict keys
    are unchanged. Returns the number of pairs fused (0 when already fused)."""
    pairs = conv_bn_pairs(module)
    for conv_name, bn_name in pairs:
        bn = module.get_submodule(bn_name)
        folded_bn = FoldedFrozenBatchNorm2d(bn.weight.numel(), bn.eps)
        folded_bn._buffers.update(bn._buffers)  # the same buffer tensors
        _replace(module, bn_name, folded_bn)
        _replace(
            module, conv_name, ConvFrozenBN.from_pair(module.get_submodule(conv_name), folded_bn)
        )
    return len(pairs)


def fold_frozen_batchnorm(module: nn.Module) -> int:
    """Bake every frozen BatchNorm of ``module`` that follows a convolution into it, in place:
    the convolution becomes a plain ``nn.Conv2d`` with a bias and the BatchNorm an
    ``nn.Identity``. For inference only (state dict keys change). Fuses first if needed, so it
    works on plain and on already fused modules. Returns the number of BatchNorms folded."""
    fuse_frozen_batchnorm(module)
    fused = [(n, m) for n, m in module.named_modules() if isinstance(m, ConvFrozenBN)]
    for name, conv in fused:
        _replace(module, name, conv.folded())
    for name in [n for n, m in module.named_modules() if isinstance(m, FoldedFrozenBatchNorm2d)]:
        _replace(module, name, nn.Identity())
    return len(fused)
