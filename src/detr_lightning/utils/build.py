"""Hydra config -> objects: datamodule, LitDETR, callbacks, loggers, Trainer."""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf, open_dict

from detr_lightning.utils.config_check import ConfigError, check_config, raise_config_errors
from detr_lightning.utils.run_component_keys import check_model_keys

log = logging.getLogger(__name__)


def check_task(cfg: DictConfig) -> None:
    """Stop early, with the fix, when the head cannot work with the chosen data."""
    if cfg.get("task", "detection") != "panoptic":
        return
    target = str(OmegaConf.select(cfg, "data._target_", default="") or "")
    if "Panoptic" not in target:
        raise ValueError(
            f"head=panoptic needs panoptic data (segment masks, PNG ground truth for PQ), but "
            f"data._target_ is {target or None}. Fix: add data=coco_panoptic (COCO 2017 "
            "panoptic) or data=shapes_panoptic (the generated shapes), or use a panoptic preset "
            "(experiment=shapes_panoptic, r50_panoptic, ...)."
        )


def instantiate_dict(node: DictConfig | None) -> list[Any]:
    """Instantiate every entry with a ``_target_`` of a name -> config mapping, in order."""
    if not node:
        return []
    return [
        instantiate(v, _convert_="all") for v in node.values() if v is not None and "_target_" in v
    ]


def build_datamodule(cfg: DictConfig) -> L.LightningDataModule:
    """Instantiate ``cfg.data``; its ``val_transforms`` config is recorded for checkpoints."""
    from detr_lightning.data.eval_transform_record import transform_record

    datamodule = instantiate(cfg.data, _convert_="all")
    if hasattr(datamodule, "val_transforms_record"):
        datamodule.val_transforms_record = transform_record(cfg.data)
    return datamodule


def build_model(
    cfg: DictConfig, datamodule: Any, training: bool = True, release: dict | None = None
) -> L.LightningModule:
    """Instantiate ``cfg.model`` with num_classes and the label map taken from the data (or,
    for inference, a checkpoint's record of them). ``training=False`` (evaluation, inference):
    a ``model.pretrained`` release whose class count differs is refused, as its re-initialised
    class head would be scored. ``release``: the ``model.pretrained`` file's state dict when the
    caller has read it already (``checkpointing.pretrained.read_release``)."""
    num_classes = getattr(datamodule, "num_classes", None)
    mapping = getattr(datamodule, "label_to_category_id", None)
    given = cfg.model.get("num_classes")
    if num_classes is not None and given is not None and int(given) != int(num_classes):
        raise ConfigError(
            f"model.num_classes={given} is set, but the class count comes from the data (or "
            f"the checkpoint): {num_classes} classes here. Fix: drop model.num_classes; to "
            "keep COCO's 91 id slots for data with COCO's category ids, set "
            "data.coco_id_space=true."
        )
    with open_dict(cfg):
        holder = "ckpt_path" if cfg.get("ckpt_path") else "model.pretrained"
        if OmegaConf.select(cfg, holder) and cfg.model.net.backbone.get("pretrained"):
            # A checkpoint or a DETR release carries its trained backbone: ImageNet weights
            # would be overwritten, and need not be on this machine.
            log.info("%s is set: not loading ImageNet weights for the backbone", holder)
            cfg.model.net.backbone.pretrained = False
        if num_classes is not None:
            cfg.model.num_classes = int(num_classes)
        if mapping is not None:
            cfg.model.label_to_category_id = [int(i) for i in mapping]
    if cfg.model.num_classes is None:
        raise ValueError(
            "model.num_classes is unknown: the datamodule did not provide num_classes; set "
            "model.num_classes=<number of classes> (COCO: 91)"
        )
    check_model_keys(cfg)
    model = instantiate(cfg.model, _convert_="all")
    from detr_lightning.checkpointing.net_record import net_record

    model.net_record = net_record(cfg.model)
    if cfg.model.get("pretrained") and not cfg.get("ckpt_path"):
        # Once, here: the trained weights are never overwritten by a later stage's setup().
        # When resuming (ckpt_path), the checkpoint's weights replace these anyway.
        from detr_lightning.checkpointing.pretrained import load_pretrained

        load_pretrained(model, cfg.model.pretrained, fine_tuning=training, release=release)
    if cfg.model.get("init_detector") and not cfg.get("ckpt_path"):
        # A previous run's detector: the panoptic recipe's stage 2, or a fresh start from it.
        from detr_lightning.checkpointing.init_detector import load_detector

        load_detector(model, cfg.model.init_detector, fine_tuning=training)
    return model


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """Instantiate ``cfg.trainer`` with the configured callbacks and loggers, the recipe record
    (what a resume restores, saved in checkpoints: checkpointing/recipe_record.py), the random
    generators' states (checkpointing/rng_states.py), each epoch's data streams
    (data/epoch_streams.py), a SIGTERM that stops every DDP rank after the same batch
    (checkpointing/sigterm_agreement.py) and atomic checkpoint writes (AtomicCheckpointIO)
    unless the config brings its own CheckpointIO."""
    from lightning.fabric.plugins import CheckpointIO

    from detr_lightning.checkpointing.atomic_io import AtomicCheckpointIO
    from detr_lightning.checkpointing.recipe_record import RecipeRecord, recipe_record
    from detr_lightning.checkpointing.rng_states import RngStates
    from detr_lightning.checkpointing.sigterm_agreement import SigtermAgreement
    from detr_lightning.data.epoch_streams import EpochStreams

    callbacks = [
        *instantiate_dict(cfg.get("callbacks")),
        RecipeRecord(recipe_record(cfg), cfg.get("resume_recipe") or "checkpoint"),
        SigtermAgreement(),  # before RngStates, which exchanges states at an agreed stop
        RngStates(),
        EpochStreams(cfg.seed),  # epoch e's data order and worker seeds on resume too
    ]
    loggers = instantiate_dict(cfg.get("logger"))
    plugins = instantiate(cfg.trainer.get("plugins"), _convert_="all") or []
    plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        plugins.append(AtomicCheckpointIO())
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins,
                       **switched_off_defaults(cfg))  # fmt: skip


def switched_off_defaults(cfg: DictConfig) -> dict[str, bool]:
    """``enable_progress_bar`` / ``enable_model_summary`` False where ``callbacks.progress_bar``
    / ``callbacks.model_summary`` is null and ``cfg.trainer`` does not set the switch: without a
    callback of its kind Lightning adds its own, so the null would do nothing."""
    chosen = cfg.get("callbacks") or {}
    return {
        switch: False
        for entry, switch in (("progress_bar", "enable_progress_bar"),
                              ("model_summary", "enable_model_summary"))
        if entry in chosen and chosen[entry] is None and cfg.trainer.get(switch) is None
    }  # fmt: skip


def log_config(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Send the resolved config to every logger (Hydra also saves it in .hydra/config.yaml),
    with the wandb run's real name (a sweep job's carries its overrides: with_wandb_run_name)."""
    from detr_lightning.utils.loggers import explained_wandb_connection_errors, with_wandb_run_name

    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    container = with_wandb_run_name(container)
    for logger in trainer.loggers:
        assert isinstance(logger, Logger)
        with explained_wandb_connection_errors():
            logger.log_hyperparams(container)  # wandb's first contact with its server


def build_run(
    cfg: DictConfig, stage: str = "fit"
) -> tuple[L.LightningDataModule, L.LightningModule, L.Trainer]:
    """What every entry point starts with: check the task and the config (``ckpt_path=last|auto``
    resolved in ``cfg``), read ``ckpt_path`` safely, apply the precision setting, seed, then build
    the datamodule, the model (sized from the data; ``model.pretrained`` loaded) and the trainer.

    ``stage``: "fit", "test" or "predict" (which data splits and files must exist). The
    checkpoint is checked against the built model here, so that a corrupt, unsafe or mismatched
    file fails with its name before ``trainer.fit/test/predict`` touches it.
    """
    import torch

    from detr_lightning.checkpointing.read import read_checkpoint
    from detr_lightning.checkpointing.validate import (
        check_lightning_checkpoint,
        check_lightning_entries,
        checkpoint_summary,
    )
    from detr_lightning.utils.distributed import refuse_multirun_launch
    from detr_lightning.utils.run_component_keys import run_component_errors

    check_task(cfg)
    check_config(cfg, stage)
    raise_config_errors(run_component_errors(cfg))
    accelerator = OmegaConf.select(cfg, "trainer.accelerator", default=None)
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        from lightning.pytorch.accelerators import MPSAccelerator

        if accelerator == "cuda" or not MPSAccelerator.is_available():  # Lightning's "gpu": either
            raise ConfigError(
                f"trainer.accelerator={accelerator} (trainer=gpu or trainer=ddp: the paper presets "
                "train on GPUs), but no GPU is visible here. Fix: trainer=cpu, or "
                "trainer=ddp_cpu for several CPU processes."
            )
    ckpt = cfg.get("ckpt_path")
    checkpoint = read_checkpoint(ckpt) if ckpt and "://" not in str(ckpt) else None
    if checkpoint is not None:
        check_lightning_entries(checkpoint, ckpt)
    if cfg.get("float32_matmul_precision"):
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    L.seed_everything(cfg.seed, workers=True)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule, training=stage == "fit")
    if checkpoint is not None:
        check_lightning_checkpoint(checkpoint, model, ckpt)
        if stage == "fit":
            from detr_lightning.checkpointing.before_resume import before_resume

            before_resume(checkpoint, model, cfg, ckpt)  # before build_trainer: the CSV logger
        log.info("ckpt_path=%s: %s", ckpt, checkpoint_summary(checkpoint))
        del checkpoint  # memory-mapped: nothing was read beyond the headers
    trainer = build_trainer(cfg)
    refuse_multirun_launch(trainer)
    return datamodule, model, trainer
