"""The random-number generators' states in checkpoints, so that a resume continues the streams
of the interrupted run instead of re-seeding them.

What draws random numbers while DETR trains: the augmentation (torchvision transforms v2, in the
main process or in workers seeded from it), dropout, the denoiser's noised boxes, and the seeds
of each epoch's data-loader workers, all from the torch CPU generator (CUDA's on a GPU), plus
numpy and Python's ``random`` where user code draws. ``seed_everything`` at the start of a
resumed process sets them to the run's first state; this callback puts back the state at the
checkpoint when the resumed run's first training epoch starts (not at load time: building the
trainer and a sanity check draw numbers that the uninterrupted run did not draw there), or, for a
checkpoint written mid-epoch, when training starts, before the resumed epoch reads its next batch.

With the data in the main process (``data.num_workers=0``), a run resumed from an epoch-end or a
mid-epoch checkpoint then trains exactly as the uninterrupted run (CPU, deterministic kernels);
with workers re-created every epoch, from an epoch-end one. Persistent workers keep their own
generators, which no checkpoint holds, and a worker's generator mid-epoch has drawn for the
batches it loaded before: those resumes stay statistically, not bitwise, equal.

Under DDP every process is seeded alike (``seed_everything`` before the launch), so without more
every rank would draw the same dropout masks, denoising noise and main-process augmentation for
its own images. Official DETR seeds each process with ``seed + rank``; here, when fitting starts,
rank ``r > 0`` moves its generators to a state derived from the shared one and ``r``
(:func:`separate_rank_streams`; rank 0 keeps the run's streams, the data order keeps the run's
seed).

Checkpoints written at the end of a training epoch, the ``last.ckpt`` written every n steps and
the one a SIGTERM during fitting writes hold every rank's states (``rng_ranks.py``), and on a resume
with as many processes each rank puts back its own: every rank continues its streams exactly. The
ranks exchange their states (``all_gather``) in ``on_train_epoch_end``, in ``on_train_batch_end``
at the steps whose end writes ``last.ckpt`` (``BestAndLastCheckpoint.writes_last_after_batch``)
or where the ranks stop on a SIGTERM (agreed by ``sigterm_agreement.SigtermAgreement``, a
callback that runs before this one), and in ``on_validation_batch_end`` once the ranks have
agreed to stop during fitting's validation (or at the training batch before it: Lightning then
stops in the validation): hooks every rank runs at the same point and before the checkpoint
callbacks' (Lightning runs those last).
Rank 0's ``state_dict`` returns them. Not inside ``state_dict``, which Lightning calls on each
rank that saves: a collective there needs every rank to save at the same point. Our saves do
(epoch end, every n steps, top-k at validation end, train end, a SIGTERM), but not every save
must (``trainer.save_checkpoint`` from rank-0-only code): there the collective would wait for
ever, or pair with another one of the other ranks; an exchange no save depends on cannot. The
exchange is kept until the next training batch starts, and used only while rank 0's generators
are still where they were at the exchange, so a checkpoint written at another point (a top-k save
at a validation end, ``trainer.save_checkpoint`` from user code) holds rank 0's states only, as
before.

A resume from such a checkpoint, from one written before per-rank states, or on another number
of processes falls back to the earlier behaviour, with a logged line (rank 0): rank 0 continues
its streams, every other rank derives new ones from rank 0's (reproducible, not the interrupted
run's). A one-process resume of a DDP checkpoint continues rank 0's.
"""

from __future__ import annotations

import logging
import random
from typing import Any

import lightning as L
import numpy as np
import torch

from detr_lightning.checkpointing.rng_ranks import RANKS, gather, states_for_rank
from detr_lightning.utils.distributed import settle_epoch_metrics

log = logging.getLogger(__name__)


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
    """Saves :func:`capture` in every checkpoint, with every DDP rank's states in those written at
    a training epoch's end, every n steps or at a SIGTERM during fitting; restores them when a
    resumed run's first training epoch starts (when training starts, for a checkpoint written
    mid-epoch).
    Under DDP, gives each rank its own streams (:func:`separate_rank_streams`) when fitting
    starts, and after a restore of rank 0's states on a rank > 0."""

    def __init__(self) -> None:
        self._restore: dict[str, Any] | None = None
        self._rank = 0
        self._ranks: list[dict[str, Any]] | None = None  # every rank's, at the last exchange

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._rank = trainer.global_rank
        if stage == "fit":
            separate_rank_streams(trainer.global_rank)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Every rank runs this hook at the same point (the same number of batches per epoch), so
        # the collective is safe here once the epoch's metric reductions have paired up (rank
        # 0's progress bar ran them already); the epoch-end checkpoint is written moments later.
        if trainer.world_size > 1:
            settle_epoch_metrics(trainer)
            self._ranks = gather(capture(), trainer.world_size)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        # Only at a step whose end saves: every rank knows it, and a collective every step
        # would cost a synchronisation each.
        if trainer.world_size > 1 and (_writes_last(trainer) or _stops_on_sigterm(trainer)):
            self._ranks = gather(capture(), trainer.world_size)

    def on_validation_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        # A SIGTERM agreed here, or at the training batch before this validation: the stop's
        # checkpoint follows, holding the training's states (validation draws nothing from
        # these generators; ``state_dict`` checks it). Every rank has the flag and the same
        # exchange (or none) at this point.
        if (trainer.world_size > 1 and trainer.received_sigterm and self._ranks is None
                and not trainer.sanity_checking):  # fmt: skip
            self._ranks = gather(capture(), trainer.world_size)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._ranks = None  # training goes on: the exchanged states are behind

    def state_dict(self) -> dict[str, Any]:
        states = capture()
        ranks = self._ranks
        if ranks is not None and not _same(ranks[self._rank], states):
            # Something drew random numbers between the exchange and this save: on rank 0 the
            # list would not be the checkpoint's moment, on another rank its entry is stale.
            log.warning(
                "rank %d's random generators moved between the ranks' exchange of states and "
                "this checkpoint: a resume from it does not continue every rank's streams "
                "exactly", self._rank,
            )  # fmt: skip
            ranks = None
        return {**states, RANKS: ranks} if ranks is not None else states

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restore = dict(state_dict) if state_dict else None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning (2.6) does not call on_train_epoch_start for an epoch it resumes part-way:
        # the states go back here, before the resumed epoch's next batch is read.
        if trainer.fit_loop.restarted_mid_epoch:
            self._put_back(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._put_back(trainer)

    def _put_back(self, trainer: L.Trainer) -> None:
        if self._restore is None:
            return
        states, own = states_for_rank(self._restore, trainer.global_rank, trainer.world_size)
        self._restore = None
        restore(states)
        if not own:
            separate_rank_streams(trainer.global_rank)


def _writes_last(trainer: L.Trainer) -> bool:
    """Whether this training batch's end writes ``last.ckpt`` (every n steps)."""
    return any(
        callable(writes := getattr(callback, "writes_last_after_batch", None)) and writes(trainer)
        for callback in trainer.checkpoint_callbacks
    )


def _stops_on_sigterm(trainer: L.Trainer) -> bool:
    """Whether Lightning stops on a SIGTERM at this training batch's end, where the checkpoint
    callback writes ``last.ckpt``. Under DDP the flag is set on every rank at once
    (``sigterm_agreement.py``); at an epoch's last batch Lightning defers the stop to the
    validation or the epoch end that follow."""
    return trainer.received_sigterm and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two :func:`capture` results are the same states."""
    cuda_a, cuda_b = a.get("cuda") or [], b.get("cuda") or []
    return (
        torch.equal(a["torch"], b["torch"])
        and len(cuda_a) == len(cuda_b)
        and all(torch.equal(x, y) for x, y in zip(cuda_a, cuda_b, strict=True))
        and list(a["numpy"][1:]) == list(b["numpy"][1:])
        and tuple(a["python"][1]) == tuple(b["python"][1])
        and a["python"][2] == b["python"][2]
    )
