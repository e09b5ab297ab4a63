"""Shared pytest fixtures."""

from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """A tiny generated shapes dataset (12 train, 5 val images); a test module may define its
    own of another size."""
    from detr_lightning.data.shapes import generate_shapes_dataset

    return generate_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", train=12, val=5)
