"""A ResNet with every stage a fraction as wide, for random-init CPU training (a trunk lever).

torchvision fixes the stage widths at 64-128-256-512 (x4 for bottlenecks); a detector trained
from scratch on small data does not need that capacity, and on a CPU the convolutions dominate
its step. torchvision has no width argument for BasicBlock ResNets, so this overrides its
``_make_layer`` (the one place every stage's width is chosen); parameter names stay torchvision's.
"""

from __future__ import annotations

import torchvision
from torch import nn

from detr_lightning.detr.backbone import (
    _BLOCK_LAYOUT,
    _EXPANSION,
    _NORMS,
    _STAGES,
    FeatureBackbone,
    resnet_body,
)


class _NarrowResNet(torchvision.models.ResNet):
    """torchvision's ResNet with every stage ``width / 64`` times as wide."""

    def __init__(self, block: type[nn.Module], layers: list[int], width: int, **kwargs) -> None:
        self._width, self._first_layer = width, True
        super().__init__(block, layers, **kwargs)
        norm_layer = kwargs["norm_layer"]
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.bn1 = norm_layer(width)

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):  # noqa: ANN001
        if self._first_layer:  # the stem's output feeds layer1
            self.inplanes, self._first_layer = self._width, False
        return super()._make_layer(block, planes * self._width // 64, blocks, stride, dilate)


class NarrowResNetBackbone(FeatureBackbone):
    """A randomly initialised, fully trained ResNet at ``width / 64`` of torchvision's widths.

    Args:
        name: resnet18, resnet34, resnet50 or resnet101 (the block layout).
        width: channels of the stem and layer1 (a multiple of 8; 32 = a quarter of the
            convolution cost of the real ResNet).
        norm: "bn" or "gn" (statistics must be learned from scratch).
        last_stage: "layer2" (stride 8), "layer3" (16) or "layer4" (32).
        return_interm_layers: return layer1..``last_stage``.
    """

    def __init__(
        self,
        name: str = "resnet18",
        width: int = 32,
        norm: str = "bn",
        last_stage: str = "layer3",
        return_interm_layers: bool = False,
    ) -> None:
        super().__init__()
        if name not in _BLOCK_LAYOUT or norm not in ("bn", "gn") or last_stage not in _STAGES[1:]:
            raise ValueError(
                f"NarrowResNetBackbone(name={name!r}, norm={norm!r}, last_stage={last_stage!r}): "
                f"name is one of {sorted(_BLOCK_LAYOUT)}, norm 'bn' or 'gn', last_stage one of "
                f"{_STAGES[1:]}."
            )
        if width < 8 or width % 8:
            raise ValueError(f"NarrowResNetBackbone: width={width} must be a multiple of 8 (>= 8).")
        resnet = _NarrowResNet(*_BLOCK_LAYOUT[name], width=width, norm_layer=_NORMS[norm])
        self.body, self.stages, self.stage_channels = resnet_body(
            resnet, width * _EXPANSION[name], last_stage, return_interm_layers
        )
        self.num_channels = self.stage_channels[-1]
