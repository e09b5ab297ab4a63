"""Fixtures of the reliability tests (issue 15: fault tolerance for multi-day runs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The helpers are imported by name, here and in the CLI subprocesses (see reliability_support.run).
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory) -> Path:
    """A tiny generated shapes dataset (12 train, 5 val images)."""
    from detr_lightning.data.shapes import generate_shapes_dataset

    return generate_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", train=12, val=5)
