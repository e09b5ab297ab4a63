"""refuse_multirun_launch: a sweep job that would start its own DDP processes stops before
training; jobs of one process, and runs outside a sweep, go on."""

import lightning as L
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import read_write

from detr_lightning.utils import conf_dir
from detr_lightning.utils.config_check import ConfigError
from detr_lightning.utils.distributed import refuse_multirun_launch


@pytest.fixture()
def hydra_mode():
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)

    def set_mode(mode: RunMode) -> None:
        with read_write(cfg.hydra):
            cfg.hydra.mode = mode
        HydraConfig.instance().set_config(cfg)

    yield set_mode
    HydraConfig.instance().cfg = None  # later tests must not run "inside" this job


def _trainer(devices: int) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=devices, strategy="ddp", logger=False,
                     enable_checkpointing=False)  # fmt: skip


def test_a_sweep_job_with_two_local_processes_is_refused_with_the_fix(hydra_mode) -> None:
    hydra_mode(RunMode.MULTIRUN)
    with pytest.raises(ConfigError, match="2 DDP processes") as err:
        refuse_multirun_launch(_trainer(2))
    assert "hydra/launcher=slurm" in str(err.value) and "trainer.devices=1" in str(err.value)


def test_one_process_jobs_and_single_runs_pass(hydra_mode) -> None:
    hydra_mode(RunMode.MULTIRUN)
    refuse_multirun_launch(_trainer(1))
    hydra_mode(RunMode.RUN)
    refuse_multirun_launch(_trainer(2))


def test_processes_started_by_slurm_pass(hydra_mode, monkeypatch) -> None:
    """Under srun the SLURM environment has started every process: Lightning starts none."""
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "sweep")
    monkeypatch.setenv("SLURM_NODELIST", "node1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    monkeypatch.setenv("SLURM_NODEID", "0")
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    hydra_mode(RunMode.MULTIRUN)
    trainer = _trainer(2)
    assert trainer.strategy.cluster_environment.creates_processes_externally
    refuse_multirun_launch(trainer)
