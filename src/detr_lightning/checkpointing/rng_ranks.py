"""Every DDP rank's random-generator states in one checkpoint, and which of them a resumed rank
puts back (the callback that calls these is ``rng_states.RngStates``; why it exchanges the
states at the end of each training epoch and at the steps that write ``last.ckpt`` every n steps,
and not while a checkpoint is written, is told there).

A checkpoint's ``RngStates`` entry holds rank 0's states at its top level (``rng_states.capture``:
what every checkpoint held before per-rank states, so older code and older checkpoints read the
same way) and, in checkpoints written at the end of a training epoch or every n steps under
DDP, ``ranks``: a list of ``world_size`` such dicts, entry ``r`` the states of rank ``r`` (entry 0
is rank 0's again).
"""

from __future__ import annotations

import logging
from typing import Any

import torch.distributed as dist

log = logging.getLogger(__name__)

RANKS = "ranks"  # the key of the per-rank list in the callback's state


def gather(states: dict[str, Any], world_size: int) -> list[dict[str, Any]]:
    """Every rank's ``states``, entry ``r`` from rank ``r`` (a list of one without a process
    group or with one process).

    A collective: every rank must call it at the same point of the run, or they wait on each
    other for ever. ``all_gather_object`` pickles the dicts (under NCCL through the current CUDA
    device, which Lightning sets per rank); what comes back has the types that went in (CPU
    tensors, lists, tuples, numbers), all of which a ``weights_only`` load accepts.
    """
    if world_size < 2 or not (dist.is_available() and dist.is_initialized()):
        return [states]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, states)
    return gathered


def states_for_rank(
    saved: dict[str, Any], rank: int, world_size: int
) -> tuple[dict[str, Any], bool]:
    """Which states rank ``rank`` of a run with ``world_size`` processes restores from a
    checkpoint's ``saved`` entry, and whether they are that rank's own (True) or rank 0's, from
    which a rank > 0 then derives its streams (False; ``rng_states.separate_rank_streams``).

    Rank 0 always gets rank 0's states. A rank > 0 gets its own when the checkpoint holds as many
    ranks as the run has; otherwise (a checkpoint from before per-rank states, one written at a
    SIGTERM or a validation's top-k save, or one saved by another number of processes)
    rank 0's, and rank 0 logs once what the other ranks do.
    """
    ranks = saved.get(RANKS) or []
    if world_size > 1 and len(ranks) == world_size:
        return ranks[rank], True
    if rank == 0:
        _explain(len(ranks), world_size)
    return saved, rank == 0


def _explain(saved_ranks: int, world_size: int) -> None:
    """One line on rank 0 about a resume whose ranks > 0 cannot continue their own streams."""
    if saved_ranks > 1 and world_size == 1:
        log.info(
            "the checkpoint holds the random generators' states of %d DDP ranks; this "
            "one-process run continues rank 0's",
            saved_ranks,
        )
    elif saved_ranks > 1:
        log.warning(
            "the checkpoint holds the random generators' states of %d DDP ranks, this run has "
            "%d: rank 0 continues its streams, the other ranks derive new ones from rank 0's "
            "(reproducible, not the interrupted run's)",
            saved_ranks, world_size,
        )  # fmt: skip
    elif world_size > 1:
        log.info(
            "the checkpoint holds rank 0's random generator states only (written at a SIGTERM, "
            "by a top-k save, or before per-rank states): rank 0 continues its streams, the "
            "other ranks derive new ones from rank 0's (reproducible, not the interrupted run's)"
        )
