"""Folding frozen BatchNorms into convolutions: biased convs, and convs read elsewhere."""

from __future__ import annotations

import torch
from torch import nn


def test_fused_conv_with_bias_equals_frozen_bn_of_conv():
    """bn(conv(x)) = (W x + b) * s + t: a conv with a bias before a frozen BatchNorm, fused,
    gives the unfused output (reference: the two modules run one after the other)."""
    import copy

    from torchvision.ops import FrozenBatchNorm2d

    from detr_lightning.detr.frozen_bn import fuse_frozen_batchnorm

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=True), FrozenBatchNorm2d(4))
    bn = net[1]
    bn.weight.copy_(torch.rand(4) + 0.5)
    bn.bias.copy_(torch.randn(4))
    bn.running_mean.copy_(torch.randn(4))
    bn.running_var.copy_(torch.rand(4) + 0.1)
    nn.init.normal_(net[0].bias)
    x = torch.randn(2, 3, 5, 5)
    want = net(x)
    fused = copy.deepcopy(net)
    assert fuse_frozen_batchnorm(fused) == 1
    torch.testing.assert_close(fused(x), want, atol=1e-5, rtol=1e-5)


def test_a_conv_whose_output_is_also_read_elsewhere_is_not_fused():
    """conv_bn_pairs: only a conv 'whose output feeds only a plain FrozenBatchNorm2d'. Here the
    raw conv output is also added to the result, so fusing would change it: the fused module
    must still equal the original."""
    import copy

    from torchvision.ops import FrozenBatchNorm2d

    from detr_lightning.detr.frozen_bn import fuse_frozen_batchnorm

    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1, bias=False)
            self.bn = FrozenBatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    torch.manual_seed(0)
    net = Both()
    net.bn.running_mean.copy_(torch.randn(3))
    net.bn.running_var.copy_(torch.rand(3) + 0.2)
    x = torch.randn(1, 3, 4, 4)
    want = net(x)
    fused = copy.deepcopy(net)
    fuse_frozen_batchnorm(fused)
    torch.testing.assert_close(fused(x), want)
