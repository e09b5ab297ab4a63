"""Shared pytest fixtures."""

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hydra.core.hydra_config import HydraConfig


def _share_the_cores() -> None:
    """Under pytest-xdist (``make test`` runs a worker per core), give each worker, and the
    processes it starts, its share of the cores: with torch's default of a thread per core in
    every worker, the workers' threads spin on each other's cores and the suite runs slower
    than in one process. An ``OMP_NUM_THREADS`` set by the caller is kept."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read by the CLI runs' interpreters
    torch.set_num_threads(threads)


_share_the_cores()


def _take_ctrl_c() -> None:
    """A suite started in the background by a non-interactive shell (``nohup make test &``,
    some CI runners) inherits SIGINT ignored, and so would every CLI run it starts: the Ctrl-C
    tests then fail, their signal never delivered. Python's own handler, as in a terminal."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_take_ctrl_c()


@pytest.fixture(autouse=True)
def _seed() -> None:
    # Random weights and inputs must not make a test flaky from run to run.
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_hydra_job_after() -> Iterator[None]:
    # Tests that act inside a Hydra job set its global config (support/hydra_jobs.py); a later
    # test must not run inside it.
    yield
    HydraConfig.instance().cfg = None


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """A tiny generated shapes dataset (12 train, 5 val images); a test module may define its
    own of another size."""
    from detr_lightning.data.shapes import generate_shapes_dataset

    return generate_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", train=12, val=5)
