"""Framework helpers: learning-rate rules, Hydra composition, logger setup.

Kept import-light (no torch/Lightning) so that ``--cfg job`` and ``--help`` answer quickly.
"""

from __future__ import annotations

import os
from pathlib import Path


def conf_dir() -> str:
    """The Hydra config directory: $DETR_CONF_DIR, else <repo>/conf next to src/ (editable
    install), else ./conf."""
    env = os.environ.get("DETR_CONF_DIR")
    if env:
        return os.path.abspath(env)
    repo = Path(__file__).resolve().parents[3] / "conf"
    return str(repo if repo.is_dir() else Path.cwd() / "conf")
