"""Shared pytest fixtures."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    # Random weights and inputs must not make a test flaky from run to run.
    torch.manual_seed(0)
