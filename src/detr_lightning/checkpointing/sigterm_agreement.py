"""SIGTERM (and Ctrl-C) under DDP: whichever ranks receive it, and whenever, every rank stops after
the same batch.

Lightning (2.6) acts on SIGTERM inside its signal handler: it sets the trainer's
``received_sigterm``, forwards the signal from rank 0 to the ranks it started, and runs a
``dist.broadcast`` from rank 0. A handler runs wherever the process happens to be, so that
broadcast pairs with whatever collective the other ranks run next (a gradient all-reduce, the
batch-start broadcast of rank 0's flag), and each rank also stops on its own flag at its batch's
end. A scheduler's SIGTERM reaches the ranks at different points (``scancel`` signals every
process, in no order; a ``kill`` may reach one rank only), so the ranks called mismatched
collectives or stopped a batch apart, and the run hung instead of writing ``last.ckpt``; a
repeated signal (rank 0's forward on top of the scheduler's) did the same.

:class:`SigtermAgreement` installs itself over Lightning's handler. Under DDP the handler only
notes the signal; at the end of every training, validation and test batch (points every rank
reaches in step: the samplers give every rank as many batches) the ranks all-reduce their notes,
and if any rank has one, every rank runs Lightning's handler there, together. Its broadcast then
pairs up, the trainer's flag is set on every rank at once, and Lightning raises
``SIGTERMException`` on every rank at that batch boundary, where the checkpoint callback writes
``last.ckpt``. A run of one process acts at once, as Lightning does. Either way a process acts on
its first SIGTERM only.

Ctrl-C (SIGINT) takes the same path once the handlers are installed: the first stops every rank
after the batch, with ``last.ckpt`` written there (``stopped_by`` says which signal: the exit
status is then 130, not 143); a second Ctrl-C stops at once, as Python's default does, saving
nothing more. A terminal's Ctrl-C reaches every process of its group, the data workers too: the
project's loaders make them ignore it (``data/loaders.py``), so that the batches the stop still
reads are there. Lightning restores the original handlers when it returns.

The cost is a one-number all-reduce per batch under DDP (one host-device synchronisation on a
GPU, as Lightning's own batch-start broadcast). The agreement replaces Lightning's handler the
moment Lightning registers it (it wraps the trainer's signal connector in ``setup``): a SIGTERM
during the ranks' barrier before the sanity check is noted too, and acted on at the first batch
end. Before that registration a SIGTERM gets the process's own handler, as without Lightning.
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType
from typing import Any

import lightning as L
import torch

from detr_lightning.utils.distributed import reduce_tensor

log = logging.getLogger(__name__)


# What a process received, as the ranks agree on it (the largest wins: a scheduler's SIGTERM
# over a Ctrl-C), and what the stop is called then.
_NONE, _CTRL_C, _SIGTERM = 0, 1, 2
STOPPED_BY = {_CTRL_C: "Ctrl-C", _SIGTERM: "SIGTERM"}

_LIGHTNING_SIGNAL_LOG = logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector")


class _DropReceivedSigterm(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "Received SIGTERM" not in record.getMessage()  # "[rank: 0] Received SIGTERM: 15"


class SigtermAgreement(L.Callback):
    """Defers Lightning's SIGTERM handler, under DDP, to a batch end every rank reaches and runs
    it there on every rank if any rank received SIGTERM or a first Ctrl-C (module docstring);
    passes one process's first signal straight to it; ignores repeated SIGTERMs, and stops at
    once on a second Ctrl-C. Installed over Lightning's handler the moment that is registered
    (``setup``); Lightning restores the original handlers when it returns.

    Attributes:
        stopped_by: "SIGTERM" or "Ctrl-C" once a stop was acted on, else None.
    """

    def __init__(self) -> None:
        self._deferred: Any = None  # the handler this one replaced (Lightning's)
        self._received = _NONE  # what this process got
        self._acted = False  # the deferred handler has run
        self.stopped_by: str | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Lightning registers its handler after this hook, then waits for every rank at a
        # barrier: installing at once closes that window. The hooks below stay as a fallback
        # should a Lightning version register otherwise.
        connector = getattr(trainer, "_signal_connector", None)
        register = getattr(connector, "register_signal_handlers", None)
        if not callable(register) or getattr(register, "sigterm_agreement", False):
            return

        def register_then_install() -> None:
            register()
            self._install(trainer)

        register_then_install.sigterm_agreement = True  # type: ignore[attr-defined]
        connector.register_signal_handlers = register_then_install  # type: ignore[union-attr]

    def _install(self, trainer: L.Trainer, *args: Any) -> None:
        handler = signal.getsignal(signal.SIGTERM)
        if not callable(handler) or getattr(handler, "sigterm_agreement", False):
            return
        self._deferred, self._received, self._acted, self.stopped_by = handler, _NONE, False, None
        installed_in = os.getpid()

        def note(received: int, frame: FrameType | None) -> None:
            self._received = received
            if trainer.world_size == 1:
                self._act(received, frame)
            else:
                log.info("rank %d: %s; every rank stops after the batch they agree on",
                         trainer.global_rank, STOPPED_BY[received])  # fmt: skip

        # A data worker forked from this process inherits these handlers: there the signal is
        # left to the training process, which stops the run (its rank 0 would also forward a
        # SIGTERM to the other ranks from the worker).
        def on_sigterm(signum: int, frame: FrameType | None) -> None:
            if os.getpid() != installed_in:
                return
            if self._received or self._acted:
                log.info("SIGTERM again: already stopping")
                return
            note(_SIGTERM, frame)

        def on_ctrl_c(signum: int, frame: FrameType | None) -> None:
            if os.getpid() != installed_in:
                return
            if self._received or self._acted:
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise KeyboardInterrupt("Ctrl-C again: stopped at once")
            if trainer.global_rank == 0:
                log.warning("Ctrl-C: stopping after this batch, with last.ckpt written there; "
                            "Ctrl-C again stops at once")  # fmt: skip
            note(_CTRL_C, frame)

        on_sigterm.sigterm_agreement = True  # type: ignore[attr-defined]
        signal.signal(signal.SIGTERM, on_sigterm)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, on_ctrl_c)  # not over a handler someone else set

    def _act(self, received: int, frame: FrameType | None) -> None:
        self._acted, self.stopped_by = True, STOPPED_BY[received]
        # as SIGTERM even for a Ctrl-C: rank 0's handler forwards its signal to the ranks it
        # started, where a SIGINT would count as the second Ctrl-C. Its "Received SIGTERM" line
        # would then tell a user who pressed Ctrl-C that something else stopped the run.
        quiet = _DropReceivedSigterm() if received == _CTRL_C else None
        if quiet:
            _LIGHTNING_SIGNAL_LOG.addFilter(quiet)
        try:
            self._deferred(signal.SIGTERM, frame)
        finally:
            if quiet:
                _LIGHTNING_SIGNAL_LOG.removeFilter(quiet)

    def agree(self, trainer: L.Trainer, *args: Any) -> None:
        """Under DDP, at a point every rank reaches: if any rank has received SIGTERM or Ctrl-C,
        run the deferred handler on every rank now. A no-op in one process, or once acted."""
        if trainer.world_size == 1 or self._acted or self._deferred is None:
            return
        note = torch.tensor([self._received], device=trainer.strategy.root_device)
        if received := int(reduce_tensor(note, "max", trainer).item()):
            self._act(received, None)

    # Lightning has registered its handler by these hooks (installed already when setup wrapped
    # the registration)
    on_sanity_check_start = on_train_start = on_test_start = _install
    on_train_batch_end = on_validation_batch_end = on_test_batch_end = agree
