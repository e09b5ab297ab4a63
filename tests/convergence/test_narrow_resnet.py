"""The narrow ResNet trunk: torchvision names at a fraction of the channels."""

import pytest
import torch

from detr_lightning.convergence.narrow_resnet import NarrowResNetBackbone
from detr_lightning.detr.backbone import Backbone


def test_width_scaled_backbone_keeps_resnet_names_at_a_fraction_of_the_channels():
    full = Backbone("resnet18", norm="bn", last_stage="layer3")
    half = NarrowResNetBackbone("resnet18", width=32, norm="bn", last_stage="layer3")
    assert half.num_channels == 128
    full_sd, half_sd = full.body.state_dict(), half.body.state_dict()
    assert full_sd.keys() == half_sd.keys()  # same names: configs and checkpoints line up
    for name, tensor in half_sd.items():
        if tensor.ndim == 4:  # conv weights [out, in, k, k]: input channels stay 3 for the stem
            expected_in = 3 if name == "conv1.weight" else full_sd[name].shape[1] // 2
            assert tensor.shape == (full_sd[name].shape[0] // 2, expected_in, *tensor.shape[2:])
    feats, _ = half(torch.randn(1, 3, 64, 64))[-1]
    assert feats.shape == (1, 128, 4, 4)
    bottleneck = NarrowResNetBackbone("resnet50", width=32, last_stage="layer4")
    assert bottleneck.num_channels == 1024
    assert bottleneck(torch.randn(1, 3, 64, 64))[-1][0].shape == (1, 1024, 2, 2)
    with pytest.raises(ValueError, match="width"):
        NarrowResNetBackbone("resnet18", width=12)
