"""Refuse top-level config keys that nothing reads.

Hydra composes whatever it is given: ``+seedd=1`` adds a key no code reads, and a group option
file without its ``# @package`` line (``conf/queries/mine.yaml`` lacking ``# @package
model.net.queries``) lands under the group's own name at the top level (``queries: {...}``),
where nothing reads it either: the run went on without the component. The keys an entry point
reads are known from conf/ itself:

* the entry point's own keys and those of the configs it extends (``predict`` -> ``eval`` ->
  ``train``),
* the groups of its defaults list that compose under their own name (``model``, ``data``,
  ``trainer``, ...: their default option has no ``@package`` line),
* the top-level keys of the ``@package _global_`` option files of every group but
  ``experiment`` (``task``, ``stages``, ...): a preset may only set keys that exist.

Only PyYAML (a Hydra dependency) and the standard library are imported.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Iterable
from pathlib import Path

import yaml

_PACKAGE = re.compile(r"^#\s*@package\s+(\S+)", re.M)


def option_package(path: Path) -> str | None:
    """The ``# @package`` of an option file (None: the group's name, Hydra's default)."""
    found = _PACKAGE.search(path.read_text()[:2000])
    return found.group(1) if found else None


def _load(path: Path) -> dict:
    data = yaml.safe_load(path.read_text()) or {}
    return data if isinstance(data, dict) else {}


@functools.cache
def known_top_level_keys(conf: str, entry: str) -> frozenset[str]:
    """Top-level keys that ``entry`` (train, eval, predict, visualize, export) reads, from the
    config directory ``conf`` (module docstring)."""
    root = Path(conf)
    keys: set[str] = {"hydra"}
    pending, seen = [entry], set()
    while pending:
        name = pending.pop()
        if name in seen or not (root / f"{name}.yaml").is_file():
            continue
        seen.add(name)
        primary = _load(root / f"{name}.yaml")
        keys |= {k for k in primary if k != "defaults"}
        for item in primary.get("defaults") or []:
            if isinstance(item, str) and item != "_self_":
                pending.append(item)  # another primary config (eval -> train)
            elif isinstance(item, dict):
                for group, option in item.items():
                    group = str(group).split("@")[0].removeprefix("override ").strip("/ ")
                    option_file = root / group / f"{option}.yaml"
                    if (
                        "/" not in group
                        and option_file.is_file()
                        and not option_package(option_file)
                    ):
                        keys.add(group)
    for option_file in root.glob("*/*.yaml"):
        if option_file.parent.name != "experiment" and option_package(option_file) == "_global_":
            keys |= {k for k in _load(option_file) if k != "defaults"}
    return frozenset(keys)


def _group_header(conf: Path, group: str) -> str | None:
    """The ``@package`` the group's shipped option files share, if they agree on one."""
    packages = {option_package(f) for f in (conf / group).glob("*.yaml")} - {None}
    return packages.pop() if len(packages) == 1 else None


def unknown_top_level_keys(
    keys: Iterable[str], conf: str, entry: str, choices: dict[str, str] | None = None
) -> list[str]:
    """One message per key of ``keys`` (a composed config's top level) that ``entry`` does
    not read; ``choices``: Hydra's group -> chosen option (names the file without its header)."""
    known = known_top_level_keys(conf, entry)
    messages = []
    for key in keys:
        if key in known:
            continue
        if (Path(conf) / key).is_dir():
            option = (choices or {}).get(key) or "<option>"
            header = _group_header(Path(conf), key)
            fix = (f"make `# @package {header}` its first line, as in the group's other files"
                   if header else "give it the `# @package` line of where it belongs")  # fmt: skip
            messages.append(
                f"{key}: conf/{key}/{option}.yaml composed at the top level, where nothing "
                f"reads it (it has no `# @package` line). Fix: {fix}."
            )
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        messages.append(
            f"{key}: no such top-level key for {entry}{hint}; nothing would read it. Fix: "
            f"remove +{key}=... from the command line (or the preset that sets it)."
        )
    return messages
