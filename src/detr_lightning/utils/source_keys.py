"""The key a user sets for a value another key copies: conf/data's ``test_images: ${.val_images}``
makes evaluation read ``data.test_images``, but ``data.val_images`` is what the command line
gives, so a message about the value must name that key."""

from __future__ import annotations

import re

from omegaconf import DictConfig, OmegaConf

# A value that is one reference and nothing else (``${.val_images}``, ``${data.val_images}``):
# a path built around a reference (``${paths.shapes_dir}/val``) is set where it stands.
_COPY = re.compile(r"\$\{(\.*)([A-Za-z_][\w.]*)\}")
_ABSENT = object()


def _raw(cfg: DictConfig, key: str) -> object:
    """``key``'s value as written (interpolations unresolved); _ABSENT where there is none."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent.keys():
        return _ABSENT
    return OmegaConf.to_container(parent, resolve=False)[leaf]


def source_key(cfg: DictConfig, key: str) -> str:
    """The key whose value ``key`` copies through plain references (``data.test_images`` ->
    ``data.val_images``); ``key`` itself when it holds a value of its own."""
    seen = [key]
    while True:
        found = _COPY.fullmatch(str(_raw(cfg, seen[-1])))
        if not found:
            return seen[-1]
        dots, ref = found.groups()
        # ``${.x}``: beside the key; each further dot one level up; no dot: from the root
        base = seen[-1].split(".")[: -len(dots)] if dots else []
        target = ".".join([*base, ref])
        if target in seen or _raw(cfg, target) is _ABSENT:
            return seen[-1]
        seen.append(target)
