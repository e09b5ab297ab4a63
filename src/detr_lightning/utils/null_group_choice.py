"""``<group>=null`` on the command line, refused before Hydra parses it.

Hydra removes a config group's choice with ``~<group>``; ``<group>=null`` (or a ``null`` in a
sweep's list of choices) stops inside Hydra's defaults list with a 20-line traceback ending in
"Config group override must be a string or a list. Got NoneType", which names neither the group
nor the fix. The entry points check their arguments first and say both. Import-light: no Hydra.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

Main = TypeVar("Main", bound=Callable[..., Any])

# [+|++]group[@package]=value
_OVERRIDE = re.compile(r"^\+{0,2}(?P<group>[\w/.-]+?)(?:@[\w.]*)?=(?P<value>.*)$")


def null_group_choices(args: Sequence[str], conf_dir: str) -> list[str]:
    """The arguments in ``args`` that choose ``null`` for a config group of ``conf_dir`` (a
    folder of it), alone or in a sweep's comma-separated list."""
    found = []
    for arg in args:
        match = _OVERRIDE.match(arg)
        if not match or not (Path(conf_dir) / match["group"]).is_dir():
            continue
        if "null" in (choice.strip() for choice in match["value"].split(",")):
            found.append(arg)
    return found


def message(arg: str) -> str:
    """What to do instead of ``arg`` (one of :func:`null_group_choices`)."""
    key = arg.split("=", 1)[0].lstrip("+")
    if "," in arg:
        return (f"{arg}: a sweep cannot leave the config group '{key}' out (Hydra has no null "
                f"choice); sweep the other choices, and run '~{key}' (without it) as a command "
                "of its own beside the sweep")  # fmt: skip
    return f"{arg}: Hydra leaves a config group out with '~{key}', not {key}=null"


def refuse_null_group_choices(conf_dir: str) -> Callable[[Main], Main]:
    """Wrap a ``@hydra.main`` entry point: exit with status 2 and one line per offending
    argument of ``sys.argv`` (:func:`null_group_choices`) before Hydra runs."""

    def wrap(main: Main) -> Main:
        @functools.wraps(main)
        def checked(*args: Any, **kwargs: Any) -> Any:
            found = null_group_choices(sys.argv[1:], conf_dir)
            if found:
                print("\n".join(message(arg) for arg in found), file=sys.stderr)
                raise SystemExit(2)
            return main(*args, **kwargs)

        return checked  # type: ignore[return-value]

    return wrap
