"""Check the keys of the run's components before any is built: the model
(:func:`check_model_keys`, when it is built, with the lever-group hints), and the data module,
the trainer and the name -> component mappings ``callbacks`` and ``logger``
(:func:`run_component_errors`, before the data is read).

A misspelt argument (``+trainer.max_epoch=3``) is named with its closest argument before the data
is read, instead of Hydra's TypeError once the data module or the trainer is instantiated. A
callback or logger entry without ``_target_`` (``+callbacks.checkpoint.every_n_epochs=2``, where
the entry is ``model_checkpoint``) builds nothing: it would be dropped without a word, so it is
refused with the entries that exist. ``null`` switches an entry off and stays allowed.
"""

from __future__ import annotations

import difflib

from omegaconf import DictConfig

from detr_lightning.utils.config_check import raise_config_errors
from detr_lightning.utils.target_keys import target_key_errors

NAMED_COMPONENTS = ("callbacks", "logger")  # name -> component mappings (utils/build.py)
COMPONENTS = ("data", "trainer")  # one _target_ node each


def _entry_without_target(path: str, name: str, entries: list[str]) -> str:
    close = difflib.get_close_matches(name, entries, n=1, cutoff=0.5)
    hint = f"did you mean {path}.{close[0]}? " if close else ""
    return (
        f"{path}.{name}: a mapping without _target_ builds no {path} entry, so its keys would "
        f"be ignored. The {path} entries are: {', '.join(entries) or 'none'}. Fix: {hint}Set the "
        f"keys of an existing entry, give this one a _target_, or {path}.<entry>=null to "
        "switch one off."
    )


def named_component_errors(node: DictConfig, path: str) -> list[str]:
    """One message per entry of ``node`` (a name -> component mapping at config path ``path``)
    that would be dropped (a mapping without ``_target_``) or whose target rejects a key."""
    entries = [str(k) for k, v in node.items() if isinstance(v, DictConfig) and "_target_" in v]
    errors: list[str] = []
    for name in node.keys():
        entry = node.get(name)
        if entry is None:
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            errors.append(_entry_without_target(path, str(name), entries))
        else:
            errors += target_key_errors(entry, f"{path}.{name}")
    return errors


def run_component_errors(cfg: DictConfig) -> list[str]:
    """The messages of :func:`named_component_errors` for ``callbacks`` and ``logger`` and of
    :func:`~detr_lightning.utils.target_keys.target_key_errors` for ``data`` and ``trainer``."""
    errors: list[str] = []
    for path in NAMED_COMPONENTS:
        node = cfg.get(path)
        if isinstance(node, DictConfig):
            errors += named_component_errors(node, path)
    for path in COMPONENTS:
        node = cfg.get(path)
        if isinstance(node, DictConfig):
            errors += target_key_errors(node, path)
    return errors


def check_model_keys(cfg: DictConfig) -> None:
    """Raise ConfigError naming every ``cfg.model`` key its ``_target_`` would reject (a lever
    group chosen on the paper's model, a misspelt ``+model...`` key) and every mapping without
    ``_target_`` where a component is expected (a group's keys set without the group), with
    the fix."""
    from hydra.core.hydra_config import HydraConfig

    from detr_lightning.utils import conf_dir
    from detr_lightning.utils.component_nodes import component_node_errors

    choices = dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else None
    raise_config_errors(
        target_key_errors(cfg.model, "model", choices)
        + component_node_errors(cfg.model, "model", conf_dir())
    )
