"""Train DETR: ``python -m detr_lightning.train [experiment=NAME] [key=value ...]``.

Composes conf/train.yaml (+ experiments/NAME.yaml), trains, evaluates the best checkpoint on the
evaluation split, writes ``metrics.json`` in the run directory and prints the AP table. A config
with ``stages`` (head=panoptic) trains each stage in turn (:mod:`detr_lightning.stages`).
``--cfg job`` prints the composed config without training; ``-m`` runs sweeps.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from detr_lightning.job_failures import records_failures
from detr_lightning.utils import absolute_path, claim_run_dirs_for_jobs_only, conf_dir
from detr_lightning.utils.job_errors import exit_on_explained_errors
from detr_lightning.utils.null_group_choice import refuse_null_group_choices


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (resuming from ``ckpt_path`` if set), then evaluate the best (else last) checkpoint.

    Returns the final metrics (also written to <run dir>/metrics.json by rank 0).
    """
    from detr_lightning.utils.config_check import check_config

    check_config(cfg, "fit")  # bad keys fail in a second, before the imports below (~7 s)
    if cfg.get("stages"):  # e.g. head=panoptic: detector, then mask head (detr_lightning.stages)
        from detr_lightning.stages import run_stages

        return run_stages(cfg, train)
    # Heavy imports here, so that `--cfg job` / `--help` stay fast.
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from detr_lightning.checkpointing.interrupted import (
        exit_stopped_training,
        fit_phase,
        note_data_error,
    )
    from detr_lightning.data.errors import DatasetFormatError, ImageLoadError
    from detr_lightning.evaluation.run_report import report
    from detr_lightning.utils.build import build_run, log_config

    datamodule, model, trainer = build_run(cfg)
    log_config(trainer, cfg)
    if trainer.is_global_zero:
        print(f"run directory: {cfg.paths.output_dir}")
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    except (ImageLoadError, DatasetFormatError) as err:  # a file read only in its batch
        note_data_error(err, trainer)
        raise
    except SIGTERMException:  # a SystemExit(None): exit status 0 unless turned into 143
        exit_stopped_training(trainer, fit_phase(trainer))
    if not cfg.get("test", True):
        return {}
    callback = trainer.checkpoint_callback
    ckpt = ""
    if callback is not None:
        ckpt = getattr(callback, "best_model_path", "") or getattr(callback, "last_model_path", "")
    try:
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt or None, verbose=False)
    except SIGTERMException:
        exit_stopped_training(trainer, "the final test (training had finished)")
    metrics = dict(model.test_metrics)
    report(trainer, cfg, metrics, checkpoint=absolute_path(ckpt) if ckpt else "final weights",
           epochs=trainer.current_epoch, global_step=trainer.global_step)  # fmt: skip
    return metrics


@refuse_null_group_choices(conf_dir())
@claim_run_dirs_for_jobs_only
@hydra.main(config_path=conf_dir(), config_name="train", version_base="1.3")
@exit_on_explained_errors
@records_failures
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns AP so that sweepers (e.g. Optuna) can optimise it."""
    from detr_lightning.utils.config_check import check_config

    check_config(cfg, "fit")  # first: utils.loggers imports Lightning (~7 s)
    from detr_lightning.utils.loggers import run_job

    return run_job(train, cfg)


if __name__ == "__main__":
    main()
