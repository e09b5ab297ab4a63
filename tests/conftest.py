"""Shared pytest fixtures."""

from collections.abc import Iterator

import pytest
import torch
from hydra.core.hydra_config import HydraConfig


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
