"""Refuse a plain mapping where a ``_target_`` node's target expects a component.

A group dropped with ``~denoiser`` but one of its keys set again (``+model.net.denoiser.groups=3``)
or a ``_target_`` removed leaves a mapping without ``_target_``. Hydra passes it on as a dict,
and the target fails deep inside with "'dict' object is not callable" or "dict is not a Module
subclass", naming neither the key nor the fix. Which arguments are components is read from the
target's annotations (a module, a callable or factory, a class of this project, or a mapping of
them such as ``extra_terms``), so a new lever needs no list kept here.
"""

from __future__ import annotations

import collections.abc
import inspect
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from detr_lightning.utils.target_keys import signature_chain

_CONTAINERS = (dict, collections.abc.Mapping, typing.Any)


def _parameters(target: str) -> dict[str, Any]:
    """{argument: resolved annotation} of ``target``, through the bases a class hands
    ``**kwargs`` to; arguments whose annotation cannot be resolved are left out."""
    try:
        obj = get_object(target)
    except (ImportError, AttributeError, ValueError):
        return {}
    found: dict[str, Any] = {}
    for p, function in signature_chain(obj)[0]:
        namespace = vars(sys.modules.get(getattr(function, "__module__", ""), typing))
        annotation = p.annotation  # a string under `from __future__ import annotations`
        try:
            found[p.name] = (
                eval(annotation, namespace) if isinstance(annotation, str) else annotation
            )
        except Exception:  # a name only imported under TYPE_CHECKING: not judged
            continue
    return found


def _is_component(hint: Any) -> bool:
    """Whether ``hint`` admits only built objects (a plain mapping is never one of them)."""
    from torch import nn

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [m for m in typing.get_args(hint) if m is not type(None)]
        return bool(members) and all(_is_component(m) for m in members)
    if hint in _CONTAINERS or typing.get_origin(hint) in (dict, collections.abc.Mapping):
        return False
    if typing.get_origin(hint) is collections.abc.Callable or hint is collections.abc.Callable:
        return True
    return inspect.isclass(hint) and (
        issubclass(hint, nn.Module) or hint.__module__.startswith("detr_lightning.")
    )


def _component_mapping(hint: Any) -> bool:
    """Whether ``hint`` is (optionally) a mapping of components (``extra_terms``)."""
    members = [m for m in typing.get_args(hint) if m is not type(None)] or [hint]
    return any(
        typing.get_origin(m) in (dict, collections.abc.Mapping)
        and len(typing.get_args(m)) == 2
        and _is_component(typing.get_args(m)[1])
        for m in members
    )


def _groups_setting(path: str, conf: Path) -> list[str]:
    """``group=option`` of the config files in ``conf`` that put a ``_target_`` at ``path``."""
    from detr_lightning.utils.top_level_keys import option_package

    found = []
    for file in sorted(conf.glob("*/*.yaml")):
        package = option_package(file) or file.parent.name
        if package == "_global_":
            inside = path
        elif path == package or path.startswith(package + "."):
            inside = path[len(package) + 1 :]
        else:
            continue
        try:
            loaded = OmegaConf.load(file)
            node = OmegaConf.select(loaded, inside) if inside else loaded
        except Exception:  # an unreadable file is the config checks' business, not this one's
            continue
        if isinstance(node, DictConfig) and "_target_" in node:
            found.append(f"{file.parent.name}={file.stem}")
    return found


def _short(hint: Any) -> str:
    """``Callable[[ModelDims], Module] | None``: the annotation without module paths."""
    text = getattr(hint, "__name__", None) if inspect.isclass(hint) else None
    return text or re.sub(r"\b(?:\w+\.)+(\w+)", r"\1", str(hint))


def _error(path: str, target: str, param: str, hint: Any, conf: Path | None) -> str:
    groups = _groups_setting(path, conf) if conf is not None and conf.is_dir() else []
    choose = (
        f"choose the group ({' or '.join(groups)}) instead of setting its keys, or "
        if groups
        else ""
    )
    return (
        f"{path}: a mapping without `_target_`, but {target} expects a component for "
        f"{param!r} ({_short(hint)}), so it cannot be built. Fix: "
        f"{choose}give {path}._target_=<class or function>, or remove {path}."
    )


def component_node_errors(node: Any, path: str, conf: str | Path | None = None) -> list[str]:
    """One message per mapping without ``_target_`` under ``node`` (config path ``path``) that
    a ``_target_`` node passes to an argument annotated as a component or a mapping of them;
    ``conf``: the config directory whose groups the fix may name."""
    errors: list[str] = []
    conf = Path(conf) if conf is not None else None
    if isinstance(node, ListConfig):
        for i in range(len(node)):
            errors += component_node_errors(node._get_node(i), f"{path}[{i}]", conf)
        return errors
    if not isinstance(node, DictConfig):
        return errors
    target = node.get("_target_") if "_target_" in node else None
    hints = _parameters(target) if isinstance(target, str) else {}
    for key in map(str, node.keys()):
        if key.startswith("_"):
            continue
        child, child_path = node._get_node(key), f"{path}.{key}"
        hint = hints.get(key)
        if hint is not None and isinstance(child, DictConfig) and not child._is_none():
            if _is_component(hint) and "_target_" not in child:
                errors.append(_error(child_path, str(target), key, hint, conf))
                continue
            if _component_mapping(hint):
                for name in map(str, child.keys()):
                    entry = child._get_node(name)
                    if (
                        isinstance(entry, DictConfig)
                        and not entry._is_none()
                        and "_target_" not in entry
                    ):
                        errors.append(_error(f"{child_path}.{name}", str(target), key, hint, conf))
        errors += component_node_errors(child, child_path, conf)
    return errors
