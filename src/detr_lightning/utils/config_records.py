"""A config recorded in a file (a checkpoint's evaluation transform or ``model.net``, an
export's panoptic settings) against this run's: which keys differ, and how to show them in the
warning that names both."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def differing_keys(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """The keys of either record whose values differ (one record lacking a key counts)."""
    return sorted(k for k in {*saved, *current} if saved.get(k) != current.get(k))


def shown(record: Mapping[str, Any], keys: Iterable[str]) -> str:
    """``{key: value, ...}`` of ``record`` for ``keys``."""
    return "{" + ", ".join(f"{k}: {record.get(k)!r}" for k in keys) + "}"
