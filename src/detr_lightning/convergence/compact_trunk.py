"""A small stride-8 CNN trunk for training DETR from random initialisation on a CPU.

Why not a ResNet: on 2 CPU cores a half-width ResNet-18 cut at layer3 spends most of a
training step in convolutions yet gives a stride-16 map, too coarse for objects of 10-30 px.
This trunk keeps ResNet's BasicBlocks but is narrow and shallow, and fuses its stride-16
stage into the stride-8 map (a two-level FPN top-down path), so every token sees the context
of the coarse stage at the resolution of the fine one.

    stem      conv3x3 s2 (3 -> width/2), conv3x3 s2 (-> width)      stride 4
    stage4    ``blocks[0]`` BasicBlocks at width                    stride 4
    stage8    ``blocks[1]`` BasicBlocks at 2 width (first strided)  stride 8
    stage16   ``blocks[2]`` BasicBlocks at 4 width (first strided)  stride 16
    output    lateral8(stage8) + upsample(lateral16(stage16))       stride 8, 3 width channels
              [+ down4(stage4), a 3x3 stride-2 conv, with ``fuse_stride4``]
              [stage16's lateral + upsample(lateral32(stage32)), with ``stride32``]

``fuse_stride4`` adds a bottom-up path from the stride-4 stage (PANet's): an object of 8-16 px
covers one or two stride-8 cells, and a cell's box edges and shape must then come from detail
finer than the cell, which the stride-8 stage has already pooled.

``stride32`` adds one more strided BasicBlock at 4 width after stage16 and its lateral into the
stride-16 level before that is upsampled (a third FPN level): without it, a cell of the output
depends on input pixels at most 47 px away, less than a large object (> 96 px) spans, so a cell
near one of its corners cannot see the opposite corner; with it, 95 px.

:class:`CompactBackbone` wraps it with the padding-mask resizing of the paper's backbones
(config: ``backbone=compact``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from detr_lightning.detr.backbone import FeatureBackbone


def _conv_norm_relu(cin: int, cout: int, stride: int, norm: type[nn.Module]) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), norm(cout), nn.ReLU(inplace=True)]


class SubsampledPointwise(nn.Conv2d):
    """A strided 1x1 convolution (no bias) computed as a 1x1 convolution of every
    ``stride``-th pixel: the same parameters and outputs as ``nn.Conv2d(cin, cout, 1, stride)``.

    Why: in torch 2.14.1 the CPU backward of a strided 1x1 convolution on a channels-last input
    with 6-12 input channels corrupts the heap (``double free or corruption``, an abort) from
    64x64 inputs up; the trunk's stride-8 shortcut has ``width`` input channels, so a width-8
    trunk aborted on 256 px images. Only narrow shortcuts use it: at 16 channels and more the
    strided kernel is sound, and its weight gradient sums in another order (1e-4 apart), which
    would move the seeded runs of the default width that docs/convergence.md reports.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(cin, cout, 1, bias=False)
        self.step = stride

    def forward(self, x: Tensor) -> Tensor:
        """x [B, cin, H, W] -> [B, cout, ceil(H / stride), ceil(W / stride)]."""
        return super().forward(x[..., :: self.step, :: self.step])


def _stage(cin: int, cout: int, blocks: int, stride: int, norm: type[nn.Module]) -> nn.Sequential:
    downsample = None
    if stride != 1 or cin != cout:
        narrow = stride != 1 and cin < 16
        shortcut = (
            SubsampledPointwise(cin, cout, stride)
            if narrow
            else nn.Conv2d(cin, cout, 1, stride, bias=False)
        )
        downsample = nn.Sequential(shortcut, norm(cout))
    layers = [BasicBlock(cin, cout, stride, downsample, norm_layer=norm)]
    layers += [BasicBlock(cout, cout, norm_layer=norm) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class CompactTrunk(nn.Module):
    """Stride-8 feature map from a narrow ResNet-style trunk with a stride-16 top-down path.

    Args:
        width: channels at stride 4 (stride 8 has 2x, stride 16 4x, the output 3x).
        blocks: BasicBlocks at strides 4, 8 and 16.
        fuse_stride4: add the stride-4 stage to the output through a 3x3 stride-2 conv.
        stride32: add a stride-32 stage (one strided BasicBlock) top-down into stride 16.
    """

    def __init__(
        self,
        width: int = 32,
        blocks: tuple[int, int, int] = (1, 1, 1),
        fuse_stride4: bool = False,
        stride32: bool = False,
    ) -> None:
        super().__init__()
        norm_layer = nn.BatchNorm2d
        if width < 8 or width % 2 or len(blocks) != 3 or min(blocks) < 1:
            raise ValueError(
                f"compact backbone (width={width}, blocks={tuple(blocks)}): need an even width "
                ">= 8 and three block counts >= 1 (strides 4, 8, 16)."
            )
        half = width // 2
        self.stem = nn.Sequential(
            *_conv_norm_relu(3, half, 2, norm_layer), *_conv_norm_relu(half, width, 2, norm_layer)
        )
        self.stage4 = _stage(width, width, blocks[0], 1, norm_layer)
        self.stage8 = _stage(width, 2 * width, blocks[1], 2, norm_layer)
        self.stage16 = _stage(2 * width, 4 * width, blocks[2], 2, norm_layer)
        self.num_channels = 3 * width
        self.lateral8 = nn.Conv2d(2 * width, self.num_channels, 1)
        self.lateral16 = nn.Conv2d(4 * width, self.num_channels, 1)
        self.down4 = nn.Conv2d(width, self.num_channels, 3, 2, 1) if fuse_stride4 else None
        self.stage32 = self.lateral32 = None
        if stride32:
            self.stage32 = _stage(4 * width, 4 * width, 1, 2, norm_layer)
            self.lateral32 = nn.Conv2d(4 * width, self.num_channels, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # oneDNN's CPU convolutions run faster on NHWC tensors; weights and input follow.
        self.to(memory_format=torch.channels_last)

    def forward(self, pixel_values: Tensor) -> dict[str, Tensor]:
        """pixel_values [B, 3, H, W] -> ``{"c4": [B, width, H/4, W/4], "c8": [B, 2 width, H/8,
        W/8], "p8": [B, 3 width, H/8, W/8]}`` (sizes rounded up); ``p8`` is the fused output."""
        x = pixel_values.contiguous(memory_format=torch.channels_last)
        c4 = self.stage4(self.stem(x))
        c8 = self.stage8(c4)
        c16 = self.stage16(c8)
        p16 = self.lateral16(c16)
        if self.stage32 is not None:
            p16 = p16 + F.interpolate(self.lateral32(self.stage32(c16)), size=c16.shape[-2:])
        top_down = F.interpolate(p16, size=c8.shape[-2:])
        p8 = self.lateral8(c8) + top_down
        if self.down4 is not None:
            p8 = p8 + self.down4(c4)
        return {"c4": c4, "c8": c8, "p8": p8}


class CompactBackbone(FeatureBackbone):
    """:class:`CompactTrunk` as a DETR backbone (random init, trainable BatchNorm).

    Args:
        width: channels at stride 4 (the output has ``3 * width``).
        blocks: BasicBlocks at strides 4, 8 and 16.
        return_interm_layers: also return the stride-4 and stride-8 stages (``c4``, ``c8``)
            before the fused output, for the panoptic mask head.
        fuse_stride4: add the stride-4 stage to the output (:class:`CompactTrunk`).
        stride32: add a stride-32 stage top-down (:class:`CompactTrunk`).
    """

    def __init__(
        self,
        width: int = 32,
        blocks: tuple[int, int, int] = (1, 1, 1),
        return_interm_layers: bool = False,
        fuse_stride4: bool = False,
        stride32: bool = False,
    ) -> None:
        super().__init__()
        self.body = CompactTrunk(width, tuple(blocks), fuse_stride4, stride32)
        self.stages = ("c4", "c8", "p8") if return_interm_layers else ("p8",)
        channels = {"c4": width, "c8": 2 * width, "p8": 3 * width}
        self.stage_channels = tuple(channels[s] for s in self.stages)
        self.num_channels = self.body.num_channels
