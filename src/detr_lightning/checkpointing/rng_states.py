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
not bitwise, equal.

Under DDP every process is seeded alike (``seed_everything`` before the launch), so without more
every rank would draw the same dropout masks, denoising noise and main-process augmentation for
its own images. Official DETR seeds each process with ``seed + rank``; here, when fitting starts,
rank ``r > 0`` moves its generators to a state derived from the shared one and ``r``
(:func:`separate_rank_streams`; rank 0 keeps the run's streams, the data order keeps the run's
seed). Checkpoints hold rank 0's states: after a resume rank 0 continues exactly, and the other
ranks derive their streams from the restored state again (reproducible, not the interrupted
run's).
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


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that is a function of the non-negative integers ``keys`` (numpy's
    ``SeedSequence``: no arithmetic overlap such as ``(a, b + 1)`` against ``(a + 1, b)``)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def separate_rank_streams(rank: int) -> None:
    """On DDP rank ``rank`` > 0, seed the torch (and CUDA), numpy and Python generators from
    one number drawn from the current torch stream and the rank: distinct streams per rank,
    each a function of the shared state. Rank 0 is left as it is."""
    if rank == 0:
        return
    seed = derive_seed(int(torch.randint(0, 2**62, (1,)).item()), rank)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class RngStates(L.Callback):
    """Saves :func:`capture` in every checkpoint; restores it when a resumed run's first training
    epoch starts. Under DDP, gives each rank its own streams (:func:`separate_rank_streams`)
    when fitting starts and after a restore."""

    def __init__(self) -> None:
        self._restore: dict[str, Any] | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            separate_rank_streams(trainer.global_rank)

    def state_dict(self) -> dict[str, Any]:
        return capture()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore = dict(state_dict) if state_dict else None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._restore is not None:
            restore(self._restore)
            self._restore = None
            separate_rank_streams(trainer.global_rank)
