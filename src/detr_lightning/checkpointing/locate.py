"""``ckpt_path=last`` / ``ckpt_path=auto``: find the newest ``last.ckpt`` of an experiment.

Runs live in ``outputs/<experiment>/<time>/`` (conf/hydra/default.yaml), each with its own
``checkpoints/last.ckpt``; a resumed run starts a new directory. "The newest" is by modification
time: the file written most recently is the furthest training got. Standard library only, so the
entry points can resolve it before the heavy imports.

In a sweep (``-m``) training resumes a job from its own folder only (:func:`job_checkpoints`):
the experiment's newest ``last.ckpt`` is another job's, of another configuration.

A staged run (``stages:``, head=panoptic) keeps each stage's checkpoints in
``<run>/stage<i>_<name>/checkpoints/``: evaluation and prediction take the final stage's (the
model with masks), training takes any stage's and resumes that run (:mod:`detr_lightning.stages`).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence

from detr_lightning.errors import ExplainedError

# Lightning's own "last" means "the last checkpoint of *this* trainer's callbacks": in a fresh run
# directory there is none, and it silently starts from scratch. These are resolved here instead.
SPECIAL = ("last", "auto")


class NoCheckpointFound(ExplainedError, FileNotFoundError):
    """``ckpt_path=last`` found no ``last.ckpt`` for the experiment."""


def experiment_dir(root_dir: str, experiment: str) -> str:
    """``<root_dir>/outputs/<experiment>``: where the runs of ``experiment`` are written."""
    return os.path.join(root_dir, "outputs", experiment)


def stage_folders(names: Sequence[str]) -> list[str]:
    """The folders of a staged run's stages, in order: ``stage<i>_<name>``."""
    return [f"stage{i}_{name}" for i, name in enumerate(names, start=1)]


def _last_ckpts(run: str, stages: Sequence[str], plain: bool) -> list[str]:
    """The last.ckpt paths of the run folder ``run`` (a path or a glob): its own (``plain``) and
    each of its stage folders' ``stages``."""
    subdirs = ([[]] if plain else []) + [[stage] for stage in stages]
    return [os.path.join(run, *sub, "checkpoints", "last.ckpt") for sub in subdirs]


def _patterns(folder: str, stages: Sequence[str], plain: bool) -> list[str]:
    """The glob patterns of last.ckpt files under the experiment folder ``folder``."""
    return _last_ckpts(os.path.join(folder, "*"), stages, plain)


def last_checkpoints(
    root_dir: str, experiment: str, stages: Sequence[str] = (), plain: bool = True
) -> list[str]:
    """Every ``outputs/<experiment>/*/checkpoints/last.ckpt`` (with ``plain``) and every
    ``outputs/<experiment>/*/<stage folder>/checkpoints/last.ckpt`` of ``stages``, newest first
    (by mtime)."""
    escaped = glob.escape(experiment_dir(root_dir, experiment))
    found = {
        p
        for pattern in _patterns(escaped, stages, plain)
        for p in glob.glob(pattern)
        if os.path.isfile(p)
    }
    return sorted(found, key=os.path.getmtime, reverse=True)


def job_checkpoints(output_dir: str, stages: Sequence[str] = ()) -> list[str]:
    """A sweep job's own ``last.ckpt`` files: ``<output_dir>/checkpoints/last.ckpt`` and each
    stage folder's, newest first. In a sweep every job is a different configuration, so a
    re-submitted job resumes only from its own folder (the same ``hydra.sweep.dir``)."""
    found = _last_ckpts(output_dir, stage_folders(stages), plain=True)
    return sorted((p for p in found if os.path.isfile(p)), key=os.path.getmtime, reverse=True)


def resolve_ckpt_path(
    value: str | None,
    root_dir: str,
    experiment: str,
    required: bool = False,
    stages: Sequence[str] = (),
) -> str | None:
    """The checkpoint ``ckpt_path=value`` stands for.

    "last": the newest ``last.ckpt`` of the experiment; NoCheckpointFound when there is none.
    "auto": the same, but None (start from scratch) when there is none, unless ``required``
    (evaluation and prediction need weights) - for jobs that are simply re-submitted after a
    pre-emption. Anything else is returned unchanged.

    ``stages``: the stage names of a staged config, in order. Then ``required`` (inference)
    looks at the final stage's folders (and at one-stage runs: joint training, same model);
    training looks at every stage's folders only, so that the staged run is resumed.
    """
    if value not in SPECIAL:
        return value
    folders = stage_folders(stages)
    if required:
        folders, plain = folders[-1:], True
    else:
        plain = not folders
    found = last_checkpoints(root_dir, experiment, folders, plain)
    if found:
        return os.path.abspath(found[0])
    if value == "auto" and not required:
        return None
    where = " or ".join(_patterns(experiment_dir(root_dir, experiment), folders, plain))
    if required and len(stages) > 1:
        where += (f" (a staged run holds the final model once its last stage, {folders[0]}, "
                  "has written a checkpoint; finish its training with ckpt_path=auto)")  # fmt: skip
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
