"""SigtermAgreement: one process acts on its first SIGTERM, or first Ctrl-C, at once; a second
Ctrl-C stops at once; under DDP (2 gloo processes) a SIGTERM or Ctrl-C that one rank receives runs
the deferred handler on every rank at the same batch end. A recording function stands in for
Lightning's handler."""

from __future__ import annotations

import os
import signal
from datetime import timedelta
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ddp_workers import start_method
from lightning.pytorch.demos.boring_classes import BoringModel

from detr_lightning.checkpointing.sigterm_agreement import SigtermAgreement
from detr_lightning.utils.distributed import reduce_tensor


def _trainer(rank: int, world_size: int) -> SimpleNamespace:
    """What the agreement reads of a trainer; its strategy reduces over the process group as
    ``utils.distributed.reduce_tensor`` does without a trainer."""
    strategy = SimpleNamespace(
        root_device=torch.device("cpu"),
        reduce=lambda x, reduce_op: reduce_tensor(x, reduce_op, None),
    )
    return SimpleNamespace(global_rank=rank, world_size=world_size, strategy=strategy)


@pytest.fixture
def lightning_handler():
    """A recording function in Lightning's handler's place (the list of the signal numbers it
    was called with); SIGTERM's and SIGINT's handlers restored afterwards, as Lightning does."""
    calls: list[int] = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    before_ctrl_c = signal.getsignal(signal.SIGINT)
    yield calls
    signal.signal(signal.SIGTERM, before)
    signal.signal(signal.SIGINT, before_ctrl_c)


def test_one_process_acts_on_its_first_sigterm_at_once_and_ignores_repeats(
    lightning_handler,
) -> None:
    agreement, trainer = SigtermAgreement(), _trainer(0, 1)
    agreement.on_sanity_check_start(trainer)
    agreement.on_train_start(trainer)  # the sanity check, then training: wrapped once
    os.kill(os.getpid(), signal.SIGTERM)
    assert lightning_handler == [signal.SIGTERM]
    os.kill(os.getpid(), signal.SIGTERM)
    agreement.on_train_batch_end(trainer)
    assert lightning_handler == [signal.SIGTERM]


def _rank_of_two(rank: int, init_file: str) -> tuple[SigtermAgreement, SimpleNamespace, list]:
    """In a gloo process group of 2, an agreement installed over a recording handler: the
    agreement, its trainer and the handler's calls."""
    # with a timeout: unpaired collectives fail rather than hang
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=30))  # fmt: skip
    calls: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    agreement, trainer = SigtermAgreement(), _trainer(rank, 2)
    agreement.on_train_start(trainer)
    return agreement, trainer, calls


def _agreement_worker(rank: int, init_file: str, out: torch.Tensor) -> None:
    """One rank of four training batches; rank 1 receives SIGTERM twice during batch 1.
    ``out[rank, batch]``: the deferred handler's calls so far, before and after the batch's end."""
    agreement, trainer, calls = _rank_of_two(rank, init_file)
    for batch in range(4):
        if rank == 1 and batch == 1:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)  # rank 0's forward on top of the scheduler's
        out[rank, batch, 0] = len(calls)
        agreement.on_train_batch_end(trainer)
        out[rank, batch, 1] = len(calls)
    dist.destroy_process_group()


def test_a_sigterm_on_one_rank_acts_on_every_rank_at_the_same_batch_end(tmp_path) -> None:
    out = torch.zeros(2, 4, 2, dtype=torch.int64).share_memory_()
    mp.start_processes(_agreement_worker, args=(str(tmp_path / "init"), out), nprocs=2,
                       start_method=start_method())  # fmt: skip
    # batch 0: nothing; batch 1: deferred on rank 1 until the batch's end, then once on both
    expected = torch.tensor([[0, 0], [0, 1], [1, 1], [1, 1]])
    assert torch.equal(out[0], expected) and torch.equal(out[1], expected)


def test_it_replaces_lightnings_handler_before_the_barrier_that_precedes_the_sanity_check(
    tmp_path,
) -> None:
    """Between Lightning's registration of its handler and the sanity check every rank waits at
    the ``run-stage`` barrier: a SIGTERM there must be noted, not broadcast."""
    seen = []
    trainer = L.Trainer(
        max_steps=1, limit_val_batches=1, callbacks=[SigtermAgreement()], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    barrier = trainer.strategy.barrier

    def recording_barrier(name: str | None = None) -> None:
        if name == "run-stage":
            seen.append(signal.getsignal(signal.SIGTERM))
        barrier(name)

    trainer.strategy.barrier = recording_barrier
    before, before_ctrl_c = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    trainer.fit(BoringModel())
    trainer.test(BoringModel(), verbose=False)
    assert len(seen) == 2  # fit, then test: installed at each registration
    assert all(getattr(handler, "sigterm_agreement", False) for handler in seen)
    assert signal.getsignal(signal.SIGTERM) == before
    assert signal.getsignal(signal.SIGINT) == before_ctrl_c  # Lightning restores ours too


def test_a_first_ctrl_c_stops_at_the_batch_end_a_second_at_once(lightning_handler) -> None:
    agreement, trainer = SigtermAgreement(), _trainer(0, 1)
    agreement.on_train_start(trainer)
    os.kill(os.getpid(), signal.SIGINT)
    # Lightning's handler runs as for SIGTERM (its flag stops the loop at the batch end)
    assert lightning_handler == [signal.SIGTERM] and agreement.stopped_by == "Ctrl-C"
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert lightning_handler == [signal.SIGTERM]


def test_a_ctrl_c_handler_set_by_someone_else_is_kept(lightning_handler) -> None:
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    SigtermAgreement().on_train_start(_trainer(0, 1))
    assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    assert not getattr(signal.getsignal(signal.SIGINT), "sigterm_agreement", False)


def test_in_a_forked_data_worker_the_handlers_leave_the_signal_to_the_training_process(
    lightning_handler,
) -> None:
    agreement = SigtermAgreement()
    agreement.on_train_start(_trainer(0, 1))
    pid = os.fork()
    if pid == 0:  # a worker forked after the install, with the handlers inherited
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        os._exit(10 + len(lightning_handler) + (agreement.stopped_by is not None))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 10  # neither acted there
    assert lightning_handler == [] and agreement.stopped_by is None


def _ctrl_c_worker(rank: int, init_file: str, out: torch.Tensor) -> None:
    """Two batches; rank 1 gets Ctrl-C during batch 0. ``out[rank]``: the deferred handler's
    calls after batch 0's end, and 1 if the stop is called Ctrl-C there."""
    agreement, trainer, calls = _rank_of_two(rank, init_file)
    if rank == 1:
        os.kill(os.getpid(), signal.SIGINT)
    agreement.on_train_batch_end(trainer)
    out[rank] = torch.tensor([len(calls), int(agreement.stopped_by == "Ctrl-C")])
    dist.destroy_process_group()


def test_a_ctrl_c_on_one_rank_stops_every_rank_at_the_batch_end_as_ctrl_c(tmp_path) -> None:
    out = torch.zeros(2, 2, dtype=torch.int64).share_memory_()
    mp.start_processes(_ctrl_c_worker, args=(str(tmp_path / "init"), out), nprocs=2,
                       start_method=start_method())  # fmt: skip
    assert out.tolist() == [[1, 1], [1, 1]]
