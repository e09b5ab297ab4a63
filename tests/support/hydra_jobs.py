"""A composed config with Hydra's run-time state set, as code inside an entry point's job sees it.

``check_config``, ``run_stages``, the loggers and ``refuse_multirun_launch`` read
``HydraConfig`` (the job's mode, number, sweep folder, the command line's overrides). Tests call
them without launching Hydra, so they compose here and set that state themselves;
``tests/conftest.py`` clears it after every test, so no test runs inside an earlier one's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from detr_lightning.utils import conf_dir


def compose_job(
    overrides: Sequence[str] = (),
    tmp: Path | None = None,
    name: str = "train",
    hydra: dict[str, Any] | None = None,
) -> DictConfig:
    """Compose ``name`` with ``overrides`` and make it the current Hydra job.

    ``tmp``: the run directory becomes ``tmp/run`` and outputs/ resolve relative to ``tmp``
    (as if launched from there). ``hydra``: further values of the hydra node by dotted key,
    e.g. ``{"mode": RunMode.MULTIRUN, "job.num": 1}`` for a sweep's second job.
    """
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.job.num = 0  # what a (multi)run sets before the job starts
        cfg.hydra.job.override_dirname = ",".join(overrides)
        if tmp is not None:
            cfg.paths.output_dir = str(tmp / "run")
            cfg.paths.root_dir = str(tmp)
            cfg.hydra.runtime.output_dir = str(tmp / "run")
        for key, value in (hydra or {}).items():
            OmegaConf.update(cfg.hydra, key, value, merge=False)
    HydraConfig.instance().set_config(cfg)
    return cfg
