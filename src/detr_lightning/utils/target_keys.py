"""Check that every ``_target_`` node of a config names only arguments its target accepts.

Hydra reports a key the target does not take as a ``TypeError`` from deep inside
``instantiate`` ("DETR.__init__() got an unexpected keyword argument 'scoring'") without saying
which config group put it there. The lever groups (``cls_loss=focal``, ``refine=boxes``, ...)
add keys that only ``ConvergenceDETR`` and ``ConvergenceCriterion`` accept, so choosing one on
the paper's model is the common way to get there; the message here names every such key with
its full path and the fix, before anything is built.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig

# The groups that set arguments only the convergence model and criterion accept.
LEVER_GROUPS = (
    "cls_loss=focal|varifocal",
    "queries",
    "refine",
    "denoiser",
    "aux_head",
    "attention_prior",
    "cross_attention",
    "decoder_hook",
    "dense_loss",
    "proposal_head",
)
# The paper's targets that model=convergence replaces (conf/model/convergence.yaml): only a key
# these counterparts accept can come from a lever group; any other key is a typo.
CONVERGENCE_COUNTERPARTS = {
    "detr_lightning.detr.model.DETR": "detr_lightning.convergence.model.ConvergenceDETR",
    "detr_lightning.detr.criterion.SetCriterion": (
        "detr_lightning.convergence.criterion.ConvergenceCriterion"
    ),
}


def _accepted(target: str) -> set[str] | None:
    """The keyword names ``target`` takes, or None when it takes any (``**kwargs``) or its
    signature cannot be read (then Hydra's own error stands). A class of this project that
    takes ``**kwargs`` hands them to its bases (the project's rule), so it takes theirs."""
    try:
        obj = get_object(target)
        signature = inspect.signature(obj)
    except (ImportError, AttributeError, ValueError, TypeError):
        return None
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        if not (inspect.isclass(obj) and obj.__module__.startswith("detr_lightning.")):
            return None
        chain, complete = signature_chain(obj)
        return {p.name for p, _ in chain} - {"self"} if complete else None
    return {p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY}


def unknown_target_keys(node: Any, path: str) -> list[tuple[str, str, str]]:
    """``(key path, key, target)`` for every key of a ``_target_`` node under ``node`` (the
    node itself included, at config path ``path``) that its target does not accept."""
    found: list[tuple[str, str, str]] = []
    if isinstance(node, DictConfig):
        target = node.get("_target_") if "_target_" in node else None
        accepted = _accepted(str(target)) if isinstance(target, str) else None
        for key in node.keys():
            key = str(key)
            if key.startswith("_"):
                continue
            if accepted is not None and key not in accepted:
                found.append((f"{path}.{key}", key, str(target)))
            found += unknown_target_keys(node._get_node(key), f"{path}.{key}")
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            found += unknown_target_keys(node._get_node(i), f"{path}[{i}]")
    return found


def _chosen_levers(choices: dict[str, Any]) -> list[str]:
    """The lever groups chosen in a Hydra run (``hydra.runtime.choices``), as ``group=option``
    (``group@package=option`` for a group placed with a package override, as Hydra keys it)."""
    groups = [g.split("=")[0] for g in LEVER_GROUPS]
    chosen = [
        (groups.index(key.split("@")[0]), f"{key}={option}")
        for key, option in choices.items()
        if key.split("@")[0] in groups
        and option not in (None, "null")
        and not (key == "cls_loss" and option == "softmax")
    ]
    return [name for _, name in sorted(chosen)]


def signature_chain(obj: Any) -> tuple[list[tuple[inspect.Parameter, Any]], bool]:
    """``(parameter, the function it belongs to)`` for the named arguments of ``obj`` (a class:
    its ``__init__``), following ``**kwargs`` into the bases a class hands them to; and whether
    the chain ends in a signature without ``**kwargs`` (False: any key may be taken, or a
    signature could not be read)."""
    functions = (
        [b.__init__ for b in inspect.getmro(obj) if "__init__" in vars(b)]
        if inspect.isclass(obj)
        else [obj]
    )
    found: list[tuple[inspect.Parameter, Any]] = []
    for function in functions:
        try:
            params = list(inspect.signature(function).parameters.values())
        except (TypeError, ValueError):
            return found, False
        named = {p.name for p, _ in found}
        found += [
            (p, function)
            for p in params
            if p.name not in named and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return found, True
    return found, False


def _closest_argument(key: str, target: str) -> str:
    """The fix for a key ``target`` does not take: its closest argument, and all of them."""
    accepted = sorted(_accepted(target) or ())
    close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.55)
    hint = f"did you mean {close[0]!r}? Rename or " if close else ""
    return f"{hint}remove it; {target}'s arguments: {', '.join(accepted)}"


def target_key_errors(node: Any, path: str, choices: dict[str, Any] | None = None) -> list[str]:
    """One message per key of ``node`` (config path ``path``) that its target would reject,
    each with the fix. A key on the paper's DETR names the lever groups that need
    ``model=convergence``: those chosen in ``choices`` (Hydra's ``runtime.choices``) when given
    and any is, else all of them, when the convergence counterpart (``CONVERGENCE_COUNTERPARTS``)
    accepts the key; any other key gets its target's arguments, the closest first."""
    errors = []
    chosen = _chosen_levers(choices or {})
    for key_path, key, target in unknown_target_keys(node, path):
        counterpart = CONVERGENCE_COUNTERPARTS.get(target)
        lever_keys = _accepted(counterpart) if counterpart else set()
        if counterpart and (lever_keys is None or key in lever_keys):  # None: takes any key
            groups = (
                "chosen here: " + ", ".join(chosen)
                if chosen
                else "one of " + ", ".join(LEVER_GROUPS)
            )
            fix = (
                f"it comes from a convergence lever group ({groups}), which only the lever "
                "model (ConvergenceDETR / ConvergenceCriterion) accepts: add model=convergence, "
                "or drop the group"
            )
        else:
            fix = _closest_argument(key, target)
        errors.append(f"{key_path}: {target} takes no argument {key!r}. Fix: {fix}.")
    return errors
