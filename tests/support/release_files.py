"""Official DETR release files for tests, made from randomly initialised models."""

from __future__ import annotations

import torch


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
