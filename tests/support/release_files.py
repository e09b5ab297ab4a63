"""Official DETR release files for tests, made from randomly initialised models."""

from __future__ import annotations

import torch

# A tiny R50-preset detector (ResNet-18 trunk, d 32, 1 + 2 layers, 5 queries) at 96-160 px, for
# release files built by the tests and the entry points that load them.
TINY_DETR = [
    "backbone=r18", "model.net.num_queries=5", "model.net.transformer.d_model=32",
    "model.net.transformer.nhead=4", "model.net.transformer.dim_feedforward=64",
    "model.net.transformer.num_encoder_layers=1", "model.net.transformer.num_decoder_layers=2",
    "data.val_transforms.size=96", "data.val_transforms.max_size=160",
]  # fmt: skip


def official_state_dict(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``net``'s weights under the official release's key names (the converter's inverse)."""
    out = {}
    for k, v in net.state_dict().items():
        if k.startswith("backbone."):
            k = "backbone.0." + k[len("backbone.") :]
        elif k.startswith("position_encoding."):
            k = "backbone.1." + k[len("position_encoding.") :]
        out[k] = v.detach().clone()
    return out
