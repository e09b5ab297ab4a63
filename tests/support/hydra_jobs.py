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
    run_dirs: bool = True,
) -> DictConfig:
    """Compose ``name`` with ``overrides`` and make it the current Hydra job.

    ``tmp``: the run directory becomes ``tmp/run`` and outputs/ resolve relative to ``tmp``
    (as if launched from there); with ``run_dirs``, ``hydra.run.dir`` and ``hydra.sweep.dir``
    too (``tmp/run``, ``tmp/multirun``), as a job sees them once Hydra has made its folder:
    resolving the config's ``${fresh_dir:...}`` would claim a folder under the tests' working
    directory. ``hydra``: further values of the hydra node by dotted key, e.g.
    ``{"mode": RunMode.MULTIRUN, "job.num": 1}`` for a sweep's second job.
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
            if run_dirs:
                cfg.hydra.run.dir, cfg.hydra.sweep.dir = str(tmp / "run"), str(tmp / "multirun")
        for key, value in (hydra or {}).items():
            OmegaConf.update(cfg.hydra, key, value, merge=False)
    HydraConfig.instance().set_config(cfg)
    return cfg
