"""ResNet backbone with frozen batch norm, optional DC5 dilation and padding-mask resizing."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

from detr_lightning.detr.frozen_bn import fold_frozen_batchnorm, fuse_frozen_batchnorm
from detr_lightning.errors import MissingFileError

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
    path = os.path.abspath(imagenet_weights_path(name))
    if not os.path.isfile(path):
        # an empty TORCH_HOME makes torch.hub's folder relative to wherever the run started
        empty = " (TORCH_HOME is set but empty)" if os.environ.get("TORCH_HOME") == "" else ""
        raise MissingFileError(
            f"ImageNet weights for backbone '{name}' not found at {path}{empty}. This project "
            f"never downloads: copy {_WEIGHTS[name].url} to that path (or point TORCH_HOME at a "
            "directory whose hub/checkpoints/ folder holds it: torch.hub reads "
            "$TORCH_HOME/hub/checkpoints/), or set model.net.backbone.pretrained=false."
        )
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    # FrozenBatchNorm2d drops num_batches_tracked itself; anything else missing is an error.
    resnet.load_state_dict(state_dict, strict=True)


_EXPANSION = {"resnet18": 1, "resnet34": 1, "resnet50": 4, "resnet101": 4}
_BLOCK_LAYOUT = {
    "resnet18": (torchvision.models.resnet.BasicBlock, [2, 2, 2, 2]),
    "resnet34": (torchvision.models.resnet.BasicBlock, [3, 4, 6, 3]),
    "resnet50": (torchvision.models.resnet.Bottleneck, [3, 4, 6, 3]),
    "resnet101": (torchvision.models.resnet.Bottleneck, [3, 4, 23, 3]),
}


def resize_mask(pixel_mask: Tensor, size: tuple[int, int]) -> Tensor:
    """pixel_mask [B, H, W] bool (True = real) -> [B, h, w] bool at a feature map's size.

    Nearest resize like official DETR, so masks match checkpoints trained with it.
    """
    return F.interpolate(pixel_mask[None].float(), size=size).to(torch.bool)[0]


class FeatureBackbone(nn.Module):
    """A trunk ``body`` returning a dict of named feature maps, and the padding masks at their sizes.

    Subclasses set ``body`` (image [B, 3, H, W] -> {stage name: [B, C, h, w]}), ``stages``
    (the returned names, finest first), ``stage_channels`` (their channel counts) and
    ``num_channels`` (the last stage's, what DETR's input projection reads).
    """

    body: nn.Module
    stages: tuple[str, ...]
    stage_channels: tuple[int, ...]
    num_channels: int
    #: run the trunk on a channels-last (NHWC) copy of the image: oneDNN convolutions then skip
    #: their layout conversions (faster on CPU; the features come out channels-last).
    channels_last: bool = False

    def fold_batchnorm(self) -> FeatureBackbone:
        """Bake every frozen BatchNorm into the convolution before it (in place; for inference:
        the state dict keys change, see :func:`~detr_lightning.detr.frozen_bn.fold_frozen_batchnorm`).
        A trunk without frozen BatchNorms is left as it is. Returns self."""
        fold_frozen_batchnorm(self.body)
        return self

    def forward(
        self, pixel_values: Tensor, pixel_mask: Tensor | None = None
    ) -> list[tuple[Tensor, Tensor]]:
        """Run the trunk and resize the padding mask to every returned feature map.

        Args:
            pixel_values: [B, 3, H, W] float, ImageNet-normalised.
            pixel_mask: [B, H, W] bool, True on real pixels (None = all real).

        Returns:
            One ``(features [B, C, h, w], mask [B, h, w] bool True=real)`` per returned stage,
            finest first (the last is the one DETR's transformer reads).
        """
        if pixel_mask is None:
            b, _, h, w = pixel_values.shape
            pixel_mask = torch.ones(b, h, w, dtype=torch.bool, device=pixel_values.device)
        if self.channels_last:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        features = self.body(pixel_values)
        return [(features[s], resize_mask(pixel_mask, features[s].shape[-2:])) for s in self.stages]


class Backbone(FeatureBackbone):
    """torchvision ResNet trunk (no avgpool/fc) with every BatchNorm frozen.

    The trunk is stored as ``self.body`` with plain ResNet parameter names (``conv1.weight``,
    ``layer1.0.bn1.running_mean``, ...), so official DETR keys ``backbone.0.body.<key>`` map to
    ``backbone.body.<key>`` by a prefix rename.

    Args:
        name: resnet18, resnet34, resnet50 or resnet101.
        dilation: DC5, i.e. dilation instead of stride in the last stage (output stride 16).
        train_backbone: layers 2-4 receive gradients; the stem and layer1 never do.
        pretrained: load torchvision's IMAGENET1K_V1 weights from the local torch hub cache.
        return_interm_layers: return layer1..``last_stage`` outputs instead of the last only
            (the panoptic mask head reads them).
        norm: "frozen_bn" (the paper: statistics and affine frozen, right for ImageNet weights),
            "bn" (trainable BatchNorm; use for a randomly initialised backbone, where frozen
            identity statistics leave the activations unnormalised) or "gn" (GroupNorm, 32 groups).
        last_stage: truncate the trunk after "layer2" (stride 8), "layer3" (16) or "layer4" (32):
            a finer feature map for small images, and a cheaper backbone.
        train_stem: also train the stem and layer1 (the paper freezes them; a randomly
            initialised backbone needs them trained).
        fuse_frozen_bn: with ``norm="frozen_bn"``, apply each frozen BatchNorm inside the
            convolution before it (:func:`~detr_lightning.detr.frozen_bn.fuse_frozen_batchnorm`:
            same keys, same gradients, no activation-sized BatchNorm pass).
        channels_last: run the trunk in NHWC memory layout (faster oneDNN convolutions on CPU).
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
        fuse_frozen_bn: bool = True,
        channels_last: bool = True,
    ) -> None:
        super().__init__()
        if name not in _WEIGHTS:
            raise ValueError(f"backbone name '{name}' is not one of {sorted(_WEIGHTS)}")
        if dilation and name in ("resnet18", "resnet34"):
            raise ValueError(f"dilation (DC5) needs a bottleneck ResNet (resnet50/101), not {name}")
        if norm not in _NORMS:
            raise ValueError(f"backbone norm '{norm}' is not one of {sorted(_NORMS)}")
        if last_stage not in _STAGES[1:]:
            raise ValueError(f"backbone last_stage '{last_stage}' is not one of {_STAGES[1:]}")
        kwargs = {
            "norm_layer": _NORMS[norm],
            "replace_stride_with_dilation": [False, False, dilation],
        }
        resnet = getattr(torchvision.models, name)(weights=None, **kwargs)
        if pretrained:
            _load_imagenet_weights(resnet, name)
        self.body, self.stages, self.stage_channels = resnet_body(
            resnet, _EXPANSION[name] * 64, last_stage, return_interm_layers
        )
        self.num_channels = self.stage_channels[-1]
        for param_name, param in self.body.named_parameters():
            in_upper_stages = param_name.split(".")[0] in _STAGES[1:]
            param.requires_grad_(train_backbone and (train_stem or in_upper_stages))
        if fuse_frozen_bn and norm == "frozen_bn":
            fuse_frozen_batchnorm(self.body)
        self.channels_last = channels_last


def resnet_body(
    resnet: nn.Module, layer1_channels: int, last_stage: str, interm: bool
) -> tuple[nn.Module, tuple[str, ...], tuple[int, ...]]:
    """A torchvision ResNet cut after ``last_stage`` as a feature extractor returning that stage
    (every stage from layer1 with ``interm``), with the returned names and channel counts.

    The extractor runs the ResNet's own modules eagerly (as the official code does), so the
    blocks keep their in-place residual additions; an FX-traced extractor would make each of
    them a new activation-sized tensor."""
    depth = _STAGES.index(last_stage) + 1
    stages = _STAGES[:depth] if interm else (last_stage,)
    body = IntermediateLayerGetter(resnet, {s: s for s in stages})
    channels = tuple(layer1_channels * 2 ** _STAGES.index(s) for s in stages)
    return body, stages, channels
