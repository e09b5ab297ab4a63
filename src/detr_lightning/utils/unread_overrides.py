"""Refuse command-line overrides that an inference entry point would silently ignore.

predict, visualize and export compose the whole training config (conf/train.yaml via
conf/eval.yaml), so ``trainer.precision=bf16-mixed`` or ``model.compile=true`` composed without a
word and changed nothing: these entry points build no Trainer, no callbacks and no logger, and
set their precision, compilation and device with their own keys (conf/predict.yaml: ``speed.*``,
``device``). :func:`refuse_unread_overrides` lists every such override, with the key that does
the job where there is one, before anything heavy is imported. The architecture (``model.*``,
``backbone=``, ...), ``data.*``, ``paths.*``, ``experiment=`` and the entry point's own keys are
read and stay accepted, except the training-only keys among them: the optimiser's
(``model.optimizer``, ``model.lr_*``), the loss's (``model.criterion.weight_dict``,
``model.criterion.matcher``) and the training batches' (``data.train_transforms``,
``data.group_by_aspect_ratio``). Only Hydra and omegaconf are imported.
"""

from __future__ import annotations

from collections.abc import Sequence

from detr_lightning.utils.config_check import ConfigError

# Config keys (and groups) that only training reads: key -> why, for the message.
TRAIN_ONLY: dict[str, str] = {
    "trainer": "no Lightning Trainer is built",
    "callbacks": "no callbacks run",
    "logger": "nothing is logged",
    "schedule": "it sets the training epochs and lr schedule",
    "model.lr_schedule": "nothing is trained",
    "model.compile": "the training step's compilation",
    "model.optimizer": "nothing is trained",
    "model.lr_backbone": "it sets a training lr",
    "model.lr_multipliers": "they scale training lrs",
    "model.lr_scaling": "it scales training lrs",
    "model.base_batch_size": "it scales training lrs",
    "model.criterion.weight_dict": "no loss is computed",
    "model.criterion.matcher": "no loss is computed",
    "data.train_transforms": "no training image is loaded",
    "data.group_by_aspect_ratio": "it groups training batches",
    "stages": "nothing is trained",
    "test": "the after-training test",
    "resume_recipe": "nothing is resumed",
    "run_name": "the logger's run name",
    "tags": "the logger's tags",
}

# entry point -> {training key: the entry point's own key that does the job}
INSTEAD: dict[str, dict[str, str]] = {
    "predict": {
        "trainer.precision": "speed.dtype (e.g. speed.dtype=bfloat16)",
        "model.compile": "speed.compile=true",
        "trainer.accelerator": "device (auto, cpu, cuda or cuda:N)",
        "trainer.devices": "device (auto, cpu, cuda or cuda:N)",
        "trainer": "device and speed.* (conf/predict.yaml)",
    },
    "visualize": {
        "trainer.accelerator": "device (auto, cpu, cuda or cuda:N)",
        "trainer.devices": "device (auto, cpu, cuda or cuda:N)",
        "trainer": "device (conf/visualize.yaml)",
    },
    "export": {},  # traces on the CPU in float32 (conf/export.yaml)
}


def _key(line: str) -> str:
    """The config key or group an override sets: ``+a.b=1`` / ``~a.b`` / ``g@pkg=x`` ->
    ``a.b`` / ``a.b`` / ``g``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(line).key_or_group


def _matches(key: str, root: str) -> bool:
    return key == root or key.startswith(root + ".")


def unread_overrides(overrides: Sequence[str], entry: str) -> list[str]:
    """One message per override in ``overrides`` that ``entry`` (predict, visualize, export)
    does not read."""
    messages = []
    for line in overrides:
        key = _key(line)
        root = next((r for r in TRAIN_ONLY if _matches(key, r)), None)
        if root is None:
            continue
        instead = INSTEAD.get(entry, {})
        # a group (trainer=gpu) by its name only; a key (trainer.devices) with its sub-keys
        use = next((v for k, v in instead.items()
                    if key == k or ("." in k and key.startswith(k + "."))), None)  # fmt: skip
        hint = f"use {use}" if use else "drop it"
        messages.append(f"{line}: {entry} does not read {key} ({TRAIN_ONLY[root]}); {hint}")
    return messages


def refuse_unread_overrides(entry: str) -> None:
    """Raise ConfigError listing the command line's overrides that ``entry`` ignores (call it
    first in the Hydra app: the overrides are ``HydraConfig.get().overrides.task``)."""
    from hydra.core.hydra_config import HydraConfig

    messages = unread_overrides(list(HydraConfig.get().overrides.task), entry)
    if messages:
        raise ConfigError(
            f"{entry}: {len(messages)} command-line override(s) configure training only and "
            "would be silently ignored:\n  - "
            + "\n  - ".join(messages)
            + f"\nFix: remove them (conf/{entry}.yaml lists the keys {entry} reads besides the "
            "model, data and paths)."
        )
