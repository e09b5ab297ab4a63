"""``model.compile=true``: ``torch.compile`` of the network, and how often it compiles.

Only the network's forward (and, through AOTAutograd, its backward) is compiled: the set
criterion calls scipy's Hungarian solver on the host and stays eager. The module is compiled
in place (``nn.Module.compile``), so parameter names, checkpoints and the optimizer's groups are
the same as without it.

Shapes: a DETR batch is padded to its largest image, so every new (H, W) is a new input shape.
``dynamic=None`` (the default) compiles the first shape statically, and on the first
different one recompiles with dynamic sizes that later shapes reuse; ``data.pad_to_multiple``
(32 or 64) bounds the distinct shapes, and with it the guards that can fail. A graph counter
callback (:class:`CompileCounter`) logs ``compile/graphs`` (graphs compiled so far) and
``compile/recompiles_epoch`` so the number is visible, not guessed.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch import nn

__all__ = ["CompileCounter", "compile_network", "compiled_graphs"]


def compiled_graphs() -> int:
    """Graphs TorchDynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def compile_network(net: nn.Module, options: dict[str, Any] | None = None) -> nn.Module:
    """``net.compile(**options)`` in place (``dynamic``, ``mode``, ``backend``, ``fullgraph``
    as for ``torch.compile``); returns ``net``."""
    net.compile(**(options or {}))
    return net


class CompileCounter(L.Callback):
    """Logs ``compile/graphs`` (total) and ``compile/recompiles_epoch`` (graphs compiled during
    the training epoch just finished) once per training epoch."""

    def __init__(self) -> None:
        self._at_epoch_start = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._at_epoch_start = compiled_graphs()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = compiled_graphs()
        pl_module.log_dict(
            {"compile/graphs": float(total),
             "compile/recompiles_epoch": float(total - self._at_epoch_start)},
            on_step=False, on_epoch=True, sync_dist=False, rank_zero_only=True,
        )  # fmt: skip
