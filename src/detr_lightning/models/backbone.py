"""ResNet backbone with frozen batch norm, optional DC5 dilation and padding-mask resizing."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.ops import FrozenBatchNorm2d

from detr_lightning.models.compact_backbone import CompactTrunk

_WEIGHTS = {
    "resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": torchvision.models.ResNet101_Weights.IMAGENET1K_V1,
}
_STAGES = ("layer1", "layer2", "layer3", "layer4")
_NORMS = {
    "frozen_bn": FrozenBatchNorm2d,
    "bn": nn.BatchNorm2d,
    "gn": lambda channels: nn.GroupNorm(32, channels),
}


def imagenet_weights_path(name: str) -> str:
    """Where torchvision's IMAGENET1K_V1 file for ``name`` lives in the local torch hub cache."""
    url = _WEIGHTS[name].url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


def _load_imagenet_weights(resnet: nn.Module, name: str) -> None:
    path = imagenet_weights_path(name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ImageNet weights for backbone '{name}' not found at {path}. This project never "
            f"downloads: copy {_WEIGHTS[name].url} to that path (or point TORCH_HOME at a "
            "directory whose checkpoints/ folder holds it), or set pretrained_backbone=false."
        )
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    # FrozenBatchNorm2d drops num_batches_tracked itself; anything else missing is an error.
    resnet.load_state_dict(state_dict, strict=True)


class _WidthScaledResNet(torchvision.models.ResNet):
    """torchvision's ResNet with every stage ``width / 64`` times as wide (same parameter names).

    torchvision fixes the widths at 64-128-256-512; a CPU recipe trained from scratch on small
    data does not need that capacity, and the convolutions dominate its step time.
    """

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


_BLOCKS = {
    "resnet18": (torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (torchvision.models.resnet.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (torchvision.models.resnet.Bottleneck, [3, 4, 6, 3]),
    "resnet101": (torchvision.models.resnet.Bottleneck, [3, 4, 23, 3]),
}


class Backbone(nn.Module):
    """torchvision ResNet trunk (no avgpool/fc) with every BatchNorm frozen.

    The trunk is stored as ``self.body`` with plain ResNet parameter names (``conv1.weight``,
    ``layer1.0.bn1.running_mean``, ...), so official DETR keys ``backbone.0.body.<key>`` map to
    ``backbone.body.<key>`` by a prefix rename.

    ``name="compact"`` selects :class:`~detr_lightning.models.compact_backbone.CompactTrunk`
    instead (random init, stride-8 output with ``3 * width`` channels, trainable BatchNorm;
    ``dilation``, ``pretrained``, ``return_interm_layers`` and ``last_stage`` do not apply to it).

    Args:
        name: resnet18, resnet34, resnet50, resnet101, or compact.
        dilation: DC5, i.e. dilation instead of stride in the last stage (output stride 16).
        train_backbone: layers 2-4 receive gradients; the stem and layer1 never do.
        pretrained: load torchvision's IMAGENET1K_V1 weights from the local torch hub cache.
        return_interm_layers: return layer1..``last_stage`` outputs instead of the last only.
        norm: "frozen_bn" (the paper: statistics and affine frozen, right for ImageNet weights),
            "bn" (trainable BatchNorm; use for a randomly initialised backbone, where frozen
            identity statistics leave the activations unnormalised) or "gn" (GroupNorm, 32 groups).
        last_stage: truncate the trunk after "layer2" (stride 8), "layer3" (16) or "layer4" (32):
            a finer feature map for small images, and a cheaper backbone.
        train_stem: also train the stem and layer1 (the paper freezes them; a randomly
            initialised backbone needs them trained).
        width: channels of the stem and layer1 (torchvision's 64 = the real ResNet; e.g. 32
            halves every stage, a quarter of the convolution cost; random init only).
    """

    def __init__(
        self,
        name: str = "resnet50",
        dilation: bool = False,
        train_backbone: bool = True,
        pretrained: bool = False,
        return_interm_layers: bool = False,
        norm: str = "frozen_bn",
        last_stage: str = "layer4",
        train_stem: bool = False,
        width: int = 64,
    ) -> None:
        super().__init__()
        if name == "compact":
            self._init_compact(width, norm, dilation, pretrained, return_interm_layers)
            for param in self.body.parameters():
                param.requires_grad_(train_backbone)
            return
        if name not in _WEIGHTS:
            raise ValueError(
                f"backbone name '{name}' is not one of {sorted(_WEIGHTS) + ['compact']}"
            )
        if dilation and name in ("resnet18", "resnet34"):
            raise ValueError(f"dilation (DC5) needs a bottleneck ResNet (resnet50/101), not {name}")
        if norm not in _NORMS:
            raise ValueError(f"backbone norm '{norm}' is not one of {sorted(_NORMS)}")
        if last_stage not in _STAGES[1:]:
            raise ValueError(f"backbone last_stage '{last_stage}' is not one of {_STAGES[1:]}")
        if width != 64 and (pretrained or width < 8 or width % 8):
            raise ValueError(
                f"backbone width={width}: ImageNet weights exist only for width 64, and other "
                "widths must be a multiple of 8 (>= 8); use width=64 or pretrained=false."
            )
        kwargs = {
            "norm_layer": _NORMS[norm],
            "replace_stride_with_dilation": [False, False, dilation],
        }
        if width == 64:
            resnet = getattr(torchvision.models, name)(weights=None, **kwargs)
        else:
            resnet = _WidthScaledResNet(*_BLOCKS[name], width=width, **kwargs)
        if pretrained:
            _load_imagenet_weights(resnet, name)
        for param_name, param in resnet.named_parameters():
            in_upper_stages = param_name.split(".")[0] in _STAGES[1:]
            param.requires_grad_(train_backbone and (train_stem or in_upper_stages))
        depth = _STAGES.index(last_stage) + 1
        stages = _STAGES[:depth] if return_interm_layers else (last_stage,)
        self.body = create_feature_extractor(resnet, {s: s for s in stages})
        self.stages = stages
        expansion = 1 if name in ("resnet18", "resnet34") else 4
        self.num_channels = width * expansion * 2 ** (depth - 1)

    def _init_compact(
        self, width: int, norm: str, dilation: bool, pretrained: bool, interm: bool
    ) -> None:
        if dilation or pretrained or interm or norm != "bn":
            raise ValueError(
                "backbone name=compact is a random-init, single-output trunk: set dilation=false, "
                f"pretrained=false, return_interm_layers=false and norm=bn (got {dilation=}, "
                f"{pretrained=}, return_interm_layers={interm}, {norm=})."
            )
        self.body = CompactTrunk(width)
        self.stages = ("p8",)
        self.num_channels = self.body.num_channels

    def forward(
        self, pixel_values: Tensor, pixel_mask: Tensor | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """Run the trunk and resize the padding mask to every returned feature map.

        Args:
            pixel_values: [B, 3, H, W] float, ImageNet-normalised.
            pixel_mask: [B, H, W] bool, True on real pixels (None = all real).

        Returns:
            One ``(features [B, C, h, w], mask [B, h, w] bool True=real)`` per returned stage,
            in order layer1..layer4 (only layer4 unless ``return_interm_layers``).
        """
        if pixel_mask is None:
            b, _, h, w = pixel_values.shape
            pixel_mask = torch.ones(b, h, w, dtype=torch.bool, device=pixel_values.device)
        features = self.body(pixel_values)
        out = []
        for stage in self.stages:
            x = features[stage]
            # Nearest resize like official DETR, so masks match checkpoints trained with it.
            mask = F.interpolate(pixel_mask[None].float(), size=x.shape[-2:]).to(torch.bool)[0]
            out.append((x, mask))
        return out
