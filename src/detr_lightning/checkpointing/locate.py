"""``ckpt_path=last`` / ``ckpt_path=auto``: find the newest ``last.ckpt`` of an experiment.

Runs live in ``outputs/<experiment>/<time>/`` (conf/hydra/default.yaml), each with its own
``checkpoints/last.ckpt``; a resumed run starts a new directory. "The newest" is by modification
time: the file written most recently is the furthest training got. Standard library only, so the
entry points can resolve it before the heavy imports.
"""

from __future__ import annotations

import glob
import os

# Lightning's own "last" means "the last checkpoint of *this* trainer's callbacks": in a fresh run
# directory there is none, and it silently starts from scratch. These are resolved here instead.
SPECIAL = ("last", "auto")


class NoCheckpointFound(FileNotFoundError):
    """``ckpt_path=last`` found no ``last.ckpt`` for the experiment."""


def experiment_dir(root_dir: str, experiment: str) -> str:
    """``<root_dir>/outputs/<experiment>``: where the runs of ``experiment`` are written."""
    return os.path.join(root_dir, "outputs", experiment)


def last_checkpoints(root_dir: str, experiment: str) -> list[str]:
    """Every ``outputs/<experiment>/*/checkpoints/last.ckpt``, newest first (by mtime)."""
    pattern = os.path.join(glob.escape(experiment_dir(root_dir, experiment)), "*", "checkpoints")
    found = [p for p in glob.glob(os.path.join(pattern, "last.ckpt")) if os.path.isfile(p)]
    return sorted(found, key=os.path.getmtime, reverse=True)


def resolve_ckpt_path(
    value: str | None, root_dir: str, experiment: str, required: bool = False
) -> str | None:
    """The checkpoint ``ckpt_path=value`` stands for.

    "last": the newest ``last.ckpt`` of the experiment; NoCheckpointFound when there is none.
    "auto": the same, but None (start from scratch) when there is none, unless ``required``
    (evaluation and prediction need weights) - for jobs that are simply re-submitted after a
    pre-emption. Anything else is returned unchanged.
    """
    if value not in SPECIAL:
        return value
    found = last_checkpoints(root_dir, experiment)
    if found:
        return os.path.abspath(found[0])
    if value == "auto" and not required:
        return None
    where = os.path.join(experiment_dir(root_dir, experiment), "*", "checkpoints", "last.ckpt")
    raise NoCheckpointFound(
        f"ckpt_path={value}: no checkpoint to resume, nothing matches {where}. Fix: launch from "
        f"the directory the training ran in (outputs/ is relative to it), check "
        f"experiment={experiment}, or give the file: ckpt_path=<path to a .ckpt>"
        + (
            "; ckpt_path=auto starts from scratch instead"
            if value == "last" and not required
            else ""
        )
    )
