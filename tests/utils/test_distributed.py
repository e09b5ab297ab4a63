"""refuse_multirun_launch: a sweep job that would start its own DDP processes stops before
training; jobs of one process, and runs outside a sweep, go on."""

import lightning as L
import pytest
from hydra.types import RunMode
from hydra_jobs import compose_job

from detr_lightning.utils.config_check import ConfigError
from detr_lightning.utils.distributed import refuse_multirun_launch


def _trainer(devices: int) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=devices, strategy="ddp", logger=False,
                     enable_checkpointing=False)  # fmt: skip


def test_a_sweep_job_with_two_local_processes_is_refused_with_the_fix() -> None:
    compose_job(hydra={"mode": RunMode.MULTIRUN})
    with pytest.raises(ConfigError, match="2 DDP processes") as err:
        refuse_multirun_launch(_trainer(2))
    assert "hydra/launcher=slurm" in str(err.value) and "trainer.devices=1" in str(err.value)


def test_one_process_jobs_and_single_runs_pass() -> None:
    compose_job(hydra={"mode": RunMode.MULTIRUN})
    refuse_multirun_launch(_trainer(1))
    compose_job(hydra={"mode": RunMode.RUN})
    refuse_multirun_launch(_trainer(2))


def test_processes_started_by_slurm_pass(monkeypatch) -> None:
    """Under srun the SLURM environment has started every process: Lightning starts none."""
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "sweep")
    monkeypatch.setenv("SLURM_NODELIST", "node1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_LOCALID", "0")
    monkeypatch.setenv("SLURM_NODEID", "0")
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    compose_job(hydra={"mode": RunMode.MULTIRUN})
    trainer = _trainer(2)
    assert trainer.strategy.cluster_environment.creates_processes_externally
    refuse_multirun_launch(trainer)
