"""Framework helpers: building objects from the config (:mod:`.build`), checking it before
anything heavy runs (:mod:`.config_check`, :mod:`.config_rules`, :mod:`.target_keys`,
:mod:`.unread_overrides`, :mod:`.consistent_heads`), optimiser groups (:mod:`.lr`), loggers,
numerical guards (:mod:`.finite`, :mod:`.clipping`, :mod:`.cpu_precision`,
:mod:`.attention_backend`) and cross-process helpers (:mod:`.distributed`).

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
