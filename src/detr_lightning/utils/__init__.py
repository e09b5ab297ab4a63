"""Framework helpers: building objects from the config (:mod:`.build`), checking it before
anything heavy runs (:mod:`.config_check`, :mod:`.config_rules`, :mod:`.target_keys`,
:mod:`.component_nodes`, :mod:`.unread_overrides`, :mod:`.consistent_heads`), optimiser groups
(:mod:`.lr`), loggers, numerical guards (:mod:`.finite`, :mod:`.clipping`, :mod:`.cpu_precision`,
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


def _given_output_dir(task_overrides: list[str], default: str) -> str:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = [
        o.value()
        for o in OverridesParser.create().parse_overrides(list(task_overrides))
        if o.key_or_group == "output_dir" and not o.is_delete()
    ]
    return str(given[-1]) if given else default


def register_resolvers() -> None:
    """``${given_output_dir:${hydra.overrides.task},DEFAULT}``: the ``output_dir=`` of the command
    line, else DEFAULT. Predict and visualize make it their run directory, so that one folder
    holds their outputs, log and ``.hydra/``; a ``-m`` sweep's jobs keep their own folders (Hydra
    reads ``hydra.sweep`` there, not ``hydra.run.dir``)."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("given_output_dir", _given_output_dir, replace=True)


# Every composition of conf/ (entry points, the compose API, tests) imports this package first.
register_resolvers()
