"""The random-number generators' states in checkpoints, so that a resume continues the streams
of the interrupted run instead of re-seeding them.

What draws random numbers while DETR trains: the augmentation (torchvision transforms v2, in the
main process or in workers seeded from it), dropout, the denoiser's noised boxes, and the seeds
of each epoch's data-loader workers, all from the torch CPU generator (CUDA's on a GPU), plus
numpy and Python's ``random`` where user code draws. ``seed_everything`` at the start of a
resumed process sets them to the run's first state; this callback puts back the state at the
checkpoint when the resumed run's first training epoch starts (not at load time: building the
trainer and a sanity check draw numbers that the uninterrupted run did not draw there).

With the data in the main process (``data.num_workers=0``) or workers that are re-created every
epoch, a run resumed from an epoch-end checkpoint then trains exactly as the uninterrupted run
(CPU, deterministic kernels). Persistent workers keep their own generators, which no checkpoint
holds, and a mid-epoch checkpoint restarts its epoch's order: those resumes stay statistically,
not bitwise, equal. Under DDP the states are rank 0's (every rank was seeded alike).
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch


def capture() -> dict[str, Any]:
    """The states of the torch CPU, CUDA (initialised devices only), numpy and Python
    generators, as types a ``weights_only`` load accepts (tensors, lists, tuples, numbers)."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda, "python": random.getstate(),
            "numpy": [name, keys.tolist(), position, has_gauss, gauss]}  # fmt: skip


def restore(states: dict[str, Any]) -> None:
    """Set the generators to ``states`` (:func:`capture`); CUDA's only when as many devices are
    initialised as were saved."""
    torch.set_rng_state(states["torch"])
    cuda = states.get("cuda") or []
    if cuda and torch.cuda.is_initialized() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all(cuda)
    name, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, gauss))
    python = states["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))


class RngStates(L.Callback):
    """Saves :func:`capture` in every checkpoint; restores it when a resumed run's first training
    epoch starts."""

    def __init__(self) -> None:
        self._restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return capture()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore = dict(state_dict) if state_dict else None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._restore is not None:
            restore(self._restore)
            self._restore = None
