"""Evaluate a checkpoint: ``python -m detr_lightning.eval experiment=NAME ckpt_path=PATH``.

``ckpt_path`` is a Lightning checkpoint of this project; to evaluate an official DETR release
instead, leave it null and pass ``model.pretrained=PATH.pth``. Writes ``metrics.json`` in the run
directory (outputs/<experiment>/eval_<time>) and prints the AP table.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from detr_lightning.job_failures import records_failures
from detr_lightning.utils import absolute_path, claim_run_dirs_for_jobs_only, conf_dir
from detr_lightning.utils.job_errors import exit_on_explained_errors
from detr_lightning.utils.null_group_choice import refuse_null_group_choices


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Run the test loop on the evaluation split; returns the metrics."""
    ckpt = cfg.get("ckpt_path")
    if not ckpt and not cfg.model.get("pretrained"):
        raise ValueError(
            "nothing to evaluate: give ckpt_path=<Lightning .ckpt> (make eval CKPT=...) or "
            "model.pretrained=<official DETR .pth>"
        )
    from detr_lightning.utils.config_check import check_config

    check_config(cfg, "test")  # also resolves ckpt_path=last, before the heavy imports
    from detr_lightning.evaluation.run_report import report
    from detr_lightning.utils.build import build_run, log_config

    datamodule, model, trainer = build_run(cfg, "test")
    ckpt = cfg.get("ckpt_path")
    log_config(trainer, cfg)
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from detr_lightning.checkpointing.interrupted import exit_stopped_evaluation

    try:
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt or None, verbose=False)
    except SIGTERMException:  # a SystemExit(None): exit status 0 unless turned into 143
        exit_stopped_evaluation(trainer)
    metrics = dict(model.test_metrics)
    report(trainer, cfg, metrics, checkpoint=absolute_path(ckpt or cfg.model.pretrained))
    return metrics


@refuse_null_group_choices(conf_dir())
@claim_run_dirs_for_jobs_only
@hydra.main(config_path=conf_dir(), config_name="eval", version_base="1.3")
@exit_on_explained_errors
@records_failures
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns AP (for sweeps over evaluation settings)."""
    from detr_lightning.utils.config_check import check_config

    check_config(cfg, "test")  # first: utils.loggers imports Lightning (~7 s)
    from detr_lightning.utils.loggers import run_job

    return run_job(evaluate, cfg)


if __name__ == "__main__":
    main()
