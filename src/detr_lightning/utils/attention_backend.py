"""``model.cudnn_attention``: keep cuDNN's fused attention out of DETR's training on a GPU.

On Hopper GPUs PyTorch (2.11 on) picks cuDNN's kernel for ``scaled_dot_product_attention``,
which ``nn.MultiheadAttention`` calls. Its backward returns NaN in the query gradient when an
attention mask is given and the key length is 64 modulo 128 (pytorch/pytorch#196678). DETR
always passes its padding mask, and a feature map of 64, 192, 320, ... tokens (a 256x256 batch
at stride 32, for one) meets the condition: the loss stays finite, the gradients of the
attention layers and everything below them do not, and training stops with ``NonFiniteLossError``.
PyTorch's memory-efficient kernel computes the same attention without the fault, so while a
model trains on CUDA, cuDNN's kernel is turned off (``torch.backends.cuda.enable_cudnn_sdp``,
a process-wide switch) and the previous setting comes back when ``fit`` ends or fails.
``model.cudnn_attention=true`` leaves PyTorch's choice alone (a stack with the fix).
"""

from __future__ import annotations

import lightning as L
import torch

__all__ = ["NoCudnnAttention", "turn_off_cudnn_attention"]


def turn_off_cudnn_attention(device: torch.device) -> bool | None:
    """On a CUDA ``device``, turn cuDNN's SDPA kernel off; returns the previous setting, or
    None (and changes nothing) on any other device."""
    if device.type != "cuda":
        return None
    previous = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(False)
    return previous


class NoCudnnAttention(L.Callback):
    """Turns cuDNN's SDPA kernel off for ``fit`` when the run's device is CUDA; restores it."""

    def __init__(self) -> None:
        self._previous: bool | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._previous = turn_off_cudnn_attention(trainer.strategy.root_device)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._previous is not None:
            torch.backends.cuda.enable_cudnn_sdp(self._previous)
            self._previous = None

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self.on_fit_end(trainer, pl_module)  # a run stopped by an error restores it too
