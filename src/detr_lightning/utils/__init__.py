"""Framework helpers: building objects from the config (:mod:`.build`), checking it before
anything heavy runs (:mod:`.config_check`, :mod:`.config_rules`, :mod:`.target_keys`,
:mod:`.component_nodes`, :mod:`.unread_overrides`, :mod:`.consistent_heads`), optimiser groups
(:mod:`.lr`), loggers, numerical guards (:mod:`.finite`, :mod:`.clipping`, :mod:`.cpu_precision`,
:mod:`.attention_backend`) and cross-process helpers (:mod:`.distributed`).

Kept import-light (no torch/Lightning) so that ``--cfg job`` and ``--help`` answer quickly.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


def conf_dir() -> str:
    """The Hydra config directory: $DETR_CONF_DIR, else <repo>/conf next to src/ (editable
    install), else ./conf."""
    env = os.environ.get("DETR_CONF_DIR")
    if env:
        return os.path.abspath(env)
    repo = Path(__file__).resolve().parents[3] / "conf"
    return str(repo if repo.is_dir() else Path.cwd() / "conf")


def current_umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def absolute_path(path: str | os.PathLike[str]) -> str:
    """``path`` absolute, with ``..`` and links resolved; a URL (``://``) as it is. For the
    paths a run records (metrics.json's checkpoint, images.json's weights): as typed they are
    relative to a working directory that no file records, so read later they name nothing."""
    text = os.fspath(path)
    return text if "://" in text else str(Path(text).resolve())


def output_dir_override(overrides: list[str]) -> str | None:
    """The value of the last ``output_dir=`` among command-line ``overrides`` (Hydra's syntax),
    else None; flags and items that do not parse as an override are skipped."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, given = OverridesParser.create(), None
    for item in overrides:
        if "output_dir=" not in item or item.startswith("-"):
            continue
        try:
            override = parser.parse_override(item)
        except Exception:  # noqa: BLE001 - a malformed override: Hydra reports it itself
            continue
        if override.key_or_group == "output_dir" and not override.is_delete():
            given = str(override.value())
    return given


_claimed: dict[str, str] = {}  # fresh_dir's answers in this process, by the path asked for
_claiming = True  # False under a flag that only prints: see claim_run_dirs_for_jobs_only


def hydra_flags(argv: list[str]) -> argparse.Namespace | None:
    """``argv`` as Hydra's own parser reads it, with argparse's every spelling (``-cjob``,
    ``--cf=job``, ``--inf``), or None where Hydra refuses it or only prints its version: either
    way Hydra then runs no job. Nothing is printed here (Hydra prints its own error)."""
    from hydra._internal.utils import get_args_parser

    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return get_args_parser().parse_known_args(argv)[0]
    except SystemExit:
        return None


def _runs_nothing(args: argparse.Namespace | None) -> bool:
    return args is None or bool(args.cfg or args.help or args.hydra_help
                                or args.info is not None or args.shell_completion)  # fmt: skip


def prints_only(argv: list[str]) -> bool:
    """Whether Hydra, given ``argv``, prints something (a config, help, info) and runs no job."""
    return _runs_nothing(hydra_flags(argv))


def runs_one_job(argv: list[str]) -> bool:
    """Whether Hydra, given ``argv``, runs a single job (not a sweep, not a print)."""
    args = hydra_flags(argv)
    return not _runs_nothing(args) and not args.multirun


def claim_run_dirs_for_jobs_only(main: F) -> F:
    """Wrap a ``@hydra.main`` entry point: under a flag that only prints (:func:`prints_only`)
    ``fresh_dir`` names the folder a run started now would get and makes nothing. ``--cfg hydra
    --resolve`` resolves ``hydra.run.dir`` and ``hydra.sweep.dir``; claimed, they stayed behind
    empty."""

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        global _claiming
        _claiming = not prints_only(sys.argv[1:])
        return main(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def fresh_dir(path: str) -> str:
    """``path`` if no folder is there yet, else the first free ``path_1``, ``path_2``, ...; the
    folder is created here (``os.mkdir`` fails on one that exists, so two processes asking at
    once get two folders). The same ``path`` asked again in this process gets the same answer.
    Under a flag that only prints (:func:`claim_run_dirs_for_jobs_only`) nothing is made.

    The run directories are named by the second they start in: without this, two runs of one
    experiment started in the same second (two jobs of a scheduler's array, two terminals)
    shared one folder, their checkpoints side by side and one ``metrics.json`` overwriting the
    other's."""
    if path in _claimed:
        return _claimed[path]
    candidates = [path, *(f"{path}_{n}" for n in range(1, 10_000))]
    if not _claiming:  # printed, not run: the name, with nothing made
        return next((c for c in candidates if not os.path.exists(c)), candidates[-1])
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        for candidate in candidates:
            try:
                os.mkdir(candidate)
            except FileExistsError:
                continue
            _claimed[path] = candidate
            return candidate
    except OSError as err:
        # Hydra resolves this before the job starts, outside the entry point's error handling:
        # its report would bury the message under a traceback through OmegaConf
        print(f"UnwritableFolderError: the run directory {os.path.abspath(path)} cannot be "
              f"made: {err}. Fix: launch from a folder you can write, or give one: "
              "hydra.run.dir=DIR (a sweep: hydra.sweep.dir=DIR).", file=sys.stderr)  # fmt: skip
        raise SystemExit(1) from None
    raise FileExistsError(f"{path}: no free run directory name among {path}_1 .. _9999")


def _given_output_dir(task_overrides: list[str], default: str) -> str:
    given = output_dir_override(list(task_overrides))
    return fresh_dir(default) if given is None else given


def register_resolvers() -> None:
    """``${fresh_dir:PATH}``: :func:`fresh_dir`, the run and sweep directories of every entry
    point. ``${given_output_dir:${hydra.overrides.task},DEFAULT}``: the ``output_dir=`` of the
    command line, else ``fresh_dir(DEFAULT)``. Predict and visualize make it their run directory,
    so that one folder holds their outputs, log and ``.hydra/``; a ``-m`` sweep's jobs keep their
    own folders (Hydra reads ``hydra.sweep`` there, not ``hydra.run.dir``)."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("given_output_dir", _given_output_dir, replace=True)
    OmegaConf.register_new_resolver("fresh_dir", fresh_dir, replace=True)


# Every composition of conf/ (entry points, the compose API, tests) imports this package first.
register_resolvers()
