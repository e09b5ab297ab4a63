"""``device=`` of predict and visualize, checked before anything loads: torch would only fail
once the model moves there ("Found no NVIDIA driver", "invalid device ordinal", a traceback
under Hydra's), after the data and weights were read."""

from __future__ import annotations

import os

import torch

CHOICES = "auto, cpu, cuda, cuda:N or mps"
_NO_GPU = "device=cpu, or device=auto (the GPU when there is one, else the CPU)"


def resolve_device(name: str | None) -> torch.device:
    """``auto``/None: the GPU when there is one, else the CPU; otherwise a torch device name.

    Raises ConfigError (one line naming ``device=`` and the fix) for a name torch cannot parse,
    a device type other than cpu, cuda and mps, a cuda device without a visible GPU or past the
    visible count, and mps where torch has no MPS backend."""
    from detr_lightning.utils.config_check import ConfigError

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"device={name}: not a device name; use one of {CHOICES}") from None
    if device.type not in ("cpu", "cuda", "mps"):
        # torch parses two dozen backends (meta, xpu, hip, ...): none is set up or tested here
        raise ConfigError(
            f"device={name}: torch names a {device.type} device, which predict and visualize do "
            f"not run on; use one of {CHOICES}"
        )
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device={name}: torch sees no CUDA GPU here (none installed, no NVIDIA driver, a "
                f"CPU-only torch build, or CUDA_VISIBLE_DEVICES hides it). Fix: {_NO_GPU}"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            shown = "unset" if visible is None else repr(visible)
            raise ConfigError(
                f"device={name}: torch sees {count} CUDA GPU(s), cuda:0 to cuda:{count - 1} "
                f"(CUDA_VISIBLE_DEVICES={shown}: torch numbers the visible ones from 0). "
                "Fix: device=cuda:0 ... or device=cuda (the first)"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"device={name}: torch's MPS backend is not available here (it needs an Apple "
            f"silicon Mac and a macOS torch build). Fix: {_NO_GPU}"
        )
    return device
