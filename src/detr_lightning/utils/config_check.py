"""Validate the common config keys before anything heavy is imported or built.

A typo such as ``data.batch_size=abc`` used to surface from torch's DataLoader after the model
was built (seconds to minutes in); here every problem is listed at once, each with its key and
the fix, within a second of launching. Only omegaconf and the standard library are imported.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    InterpolationToMissingValueError,
    MissingMandatoryValue,
    OmegaConfBaseException,
)

from detr_lightning.errors import ExplainedError
from detr_lightning.utils.ckpt_resolution import NEEDS_WEIGHTS as _NEEDS_WEIGHTS
from detr_lightning.utils.ckpt_resolution import resolve_special_ckpt_path
from detr_lightning.utils.config_rules import DATA_RULES, ENTRY_RULES, size_rules
from detr_lightning.utils.config_rules import is_int as _is_int
from detr_lightning.utils.config_rules import is_number as _is_number
from detr_lightning.utils.source_keys import source_key

log = logging.getLogger(__name__)

_ABSENT = object()


class ConfigError(ExplainedError, ValueError):
    """One or more config values are invalid; the message lists each key with its fix."""


def _devices_ok(v: Any) -> bool:
    if v == "auto" or (_is_int(v) and (v >= 1 or v == -1)):
        return True
    if isinstance(v, str):  # "0,1" or "-1"
        parts = [p.strip() for p in v.split(",") if p.strip()]
        return bool(parts) and all(p.lstrip("-").isdigit() for p in parts)
    if isinstance(v, (list, tuple)) or OmegaConf.is_list(v):
        return len(v) > 0 and all(_is_int(i) and i >= 0 for i in v)
    return False


# key -> (accepts, what it must be, example fix). Keys absent from the config are skipped.
_RULES: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "data.batch_size": (lambda v: _is_int(v) and v >= 1,
                        "a positive integer (images per device)", "data.batch_size=2"),
    "data.val_batch_size": (lambda v: v is None or (_is_int(v) and v >= 1),
                            "null or a positive integer", "data.val_batch_size=4"),
    "data.num_workers": (lambda v: _is_int(v) and v >= 0,
                         "an integer >= 0 (0 loads in the main process)", "data.num_workers=4"),
    "model.optimizer.lr": (lambda v: _is_number(v) and v > 0,
                           "a positive number", "model.optimizer.lr=1e-4"),
    "model.lr_backbone": (lambda v: _is_number(v) and v >= 0,
                          "a number >= 0 (0 freezes the backbone)", "model.lr_backbone=1e-5"),
    "model.lr_schedule.warmup_steps": (lambda v: _is_int(v) and v >= 0,
                                       "an integer >= 0", "model.lr_schedule.warmup_steps=0"),
    "model.lr_schedule.budget_min": (lambda v: _is_number(v) and v > 0,
                                     "a positive number of minutes",
                                     "model.lr_schedule.budget_min=13"),
    "model.lr_schedule.decay_share": (lambda v: _is_number(v) and 0 < v <= 1,
                                      "a number in (0, 1]", "model.lr_schedule.decay_share=0.3"),
    "model.lr_schedule.max_val_share": (lambda v: _is_number(v) and 0 < v <= 1,
                                        "a number in (0, 1]",
                                        "model.lr_schedule.max_val_share=0.1"),
    "resume_recipe": (lambda v: v in ("checkpoint", "config"),
                      "checkpoint (resume the run's recipe) or config (apply the composed one)",
                      "resume_recipe=config"),
    "trainer.max_epochs": (lambda v: v is None or (_is_int(v) and v >= -1),
                           "an integer >= 0 (-1: no epoch limit)", "trainer.max_epochs=50"),
    "trainer.max_steps": (lambda v: _is_int(v) and v >= -1,
                          "an integer (-1: no step limit)", "trainer.max_steps=-1"),
    "trainer.devices": (_devices_ok, 'a positive integer, -1, "auto" or a list of device ids',
                        "trainer.devices=1"),
    "trainer.num_nodes": (lambda v: _is_int(v) and v >= 1,
                          "a positive integer", "trainer.num_nodes=1"),
    "trainer.accumulate_grad_batches": (lambda v: _is_int(v) and v >= 1,
                                        "a positive integer", "trainer.accumulate_grad_batches=1"),
    "trainer.gradient_clip_val": (lambda v: v is None or (_is_number(v) and v >= 0),
                                  "null or a number >= 0", "trainer.gradient_clip_val=0.1"),
}  # fmt: skip


def _select(cfg: DictConfig, key: str, errors: list[str]) -> Any:
    try:
        return OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
    except InterpolationToMissingValueError as err:
        # e.g. data.test_images: ${.val_images} with val_images = ???: name the unset key.
        found = re.search(r"Missing mandatory value: (\S+)", str(err))
        target = found.group(1) if found else "the key it refers to"
        message = f"{target} is not set (???). Fix: give {target}=<value> on the command line."
        if message not in errors:
            errors.append(message)
    except MissingMandatoryValue:
        message = f"{key} is not set (???). Fix: give {key}=<value> on the command line."
        if message not in errors:
            errors.append(message)
    except OmegaConfBaseException as err:
        first = str(err).splitlines()[0]
        errors.append(
            f"{key} cannot be resolved ({first}). Fix: correct the value or interpolation."
        )
    return _ABSENT


def _check_values(cfg: DictConfig, errors: list[str]) -> None:
    rules = {**_RULES, **DATA_RULES, **size_rules(cfg), **ENTRY_RULES}
    for key, (accepts, what, example) in rules.items():
        value = _select(cfg, key, errors)
        if value is not _ABSENT and not accepts(value):
            errors.append(f"{key}={value!r} ({type(value).__name__}): must be {what}. Fix: e.g. "
                          f"{example}")  # fmt: skip


def _data_keys(cfg: DictConfig, stage: str) -> list[str]:
    splits = ["test"] if stage in _NEEDS_WEIGHTS else ["train", "val"]
    if stage == "fit" and cfg.get("test", True):
        splits.append("test")
    return [f"{s}_{kind}" for s in splits for kind in ("images", "ann")]


def _looked_from(path: str) -> str:
    """Where a relative path was looked for; a leading ``~`` is named, as nothing expands it."""
    home = "; `~` is not expanded here: give the full path" if str(path).startswith("~") else ""
    return f"(from {os.getcwd()}{home})"


def _check_data_paths(cfg: DictConfig, stage: str, errors: list[str]) -> None:
    data = cfg.get("data")
    if data is None:
        return
    # Generated data is written by prepare_data on first use, below its root: only a path
    # outside the root must exist already.
    root = (
        _select(cfg, "data.generate_shapes.root", errors) if data.get("generate_shapes") else None
    )
    root = os.path.abspath(root) if isinstance(root, str) else None
    named: set[str] = set()
    for name in _data_keys(cfg, stage):
        if name not in data.keys():  # ("in" is False for ??? values, which must be reported)
            continue
        key = f"data.{name}"
        value = _select(cfg, key, errors)
        if value is _ABSENT or value is None:
            continue
        if root and os.path.abspath(value).startswith(root + os.sep):
            continue
        want_dir = name.endswith("_images")
        if os.path.isdir(value) if want_dir else os.path.isfile(value):
            continue
        given = source_key(cfg, key)  # data.test_images copies data.val_images: name that, once
        if given not in named:
            named.add(given)
            kind = "image folder" if want_dir else "annotation file"
            read = f" (read as {key})" if given != key else ""
            errors.append(f"{given}={value}{read}: no such {kind} {_looked_from(value)}. Fix: "
                          f"give {given}=<path> (or paths.data_dir / paths.coco_dir for the "
                          "presets).")  # fmt: skip


def _check_files(cfg: DictConfig, stage: str, errors: list[str]) -> None:
    ckpt = cfg.get("ckpt_path")
    if ckpt and "://" not in str(ckpt) and not os.path.isfile(ckpt):
        errors.append(f"ckpt_path={ckpt}: no such file {_looked_from(ckpt)}. Fix: give an "
                      "existing .ckpt, or ckpt_path=last for the newest last.ckpt of the "
                      "experiment.")  # fmt: skip
    pretrained = _select(cfg, "model.pretrained", errors)
    if pretrained not in (_ABSENT, None, "") and not ckpt and not os.path.isfile(pretrained):
        errors.append(f"model.pretrained={pretrained}: no such file {_looked_from(pretrained)}. "
                      "Fix: give the official DETR .pth release file, or model.pretrained=null.")  # fmt: skip
    if stage in _NEEDS_WEIGHTS and not ckpt and pretrained in (_ABSENT, None, ""):
        errors.append("nothing to evaluate: neither ckpt_path nor model.pretrained is set. Fix: "
                      "ckpt_path=<Lightning .ckpt> (or ckpt_path=last) or "
                      "model.pretrained=<official DETR .pth>.")  # fmt: skip


def _check_required(cfg: DictConfig, stage: str, errors: list[str]) -> None:
    """A preset's ``required``: {key: what it must be} that a fresh training run must be given
    (a ``???`` in a preset cannot do it: merged over the base's value, it leaves that value)."""
    if stage != "fit" or cfg.get("ckpt_path"):
        return  # a resumed run, an evaluation or predictions read the checkpoint instead
    for key, what in (cfg.get("required") or {}).items():
        if _select(cfg, key, errors) in (None, _ABSENT, ""):
            name = cfg.get("experiment_name", "this preset")
            errors.append(f"{key} is not set; experiment {name} needs it: {what}. Fix: give "
                          f"{key}=<value> on the command line.")  # fmt: skip


def _check_top_level(cfg: DictConfig, errors: list[str]) -> None:
    """Top-level keys the running entry point does not read (:mod:`.top_level_keys`)."""
    from hydra.core.hydra_config import HydraConfig

    from detr_lightning.utils import conf_dir
    from detr_lightning.utils.top_level_keys import unknown_top_level_keys

    if not HydraConfig.initialized():
        return  # composed outside a job (the compose API): no entry point to check against
    job = HydraConfig.get()
    choices = {str(k): str(v) for k, v in job.runtime.choices.items()}
    errors += unknown_top_level_keys(list(cfg), conf_dir(), job.job.config_name, choices)


def check_config(cfg: DictConfig, stage: str = "fit") -> None:
    """Resolve ``ckpt_path=last|auto``, then raise ConfigError listing every invalid common key
    (types and ranges, :mod:`~detr_lightning.utils.config_rules` included: model sizes, data
    booleans, the inference entry points' keys; data paths for non-generated data, checkpoint
    files).

    ``stage``: "fit" (train), "test" (eval) or "predict": which data splits and files must exist.
    """
    errors: list[str] = []
    if stage == "fit" and cfg.get("resume_recipe") == "config" and not cfg.get("ckpt_path"):
        errors.append("resume_recipe=config applies the composed recipe to a resumed run, and "
                      "ckpt_path is not set. Fix: give ckpt_path=<.ckpt>|last|auto, or drop "
                      "resume_recipe=config.")  # fmt: skip
    resolve_special_ckpt_path(cfg, stage)
    _check_top_level(cfg, errors)
    _check_required(cfg, stage, errors)
    _check_values(cfg, errors)
    _check_data_paths(cfg, stage, errors)
    _check_files(cfg, stage, errors)
    raise_config_errors(errors)


def raise_config_errors(errors: list[str]) -> None:
    """Raise one ConfigError listing every message of ``errors`` (nothing when it is empty)."""
    if errors:
        raise ConfigError(
            f"invalid config ({len(errors)} problem{'s' if len(errors) > 1 else ''}):\n  - "
            + "\n  - ".join(errors)
        )
