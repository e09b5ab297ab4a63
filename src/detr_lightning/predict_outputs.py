"""What ``predict`` (and ``visualize``) writes into its ``output_dir``, and the refusal of a
folder that already holds an earlier run's outputs (two runs never mix; nothing there is deleted
or rewritten).

``output_dir=DIR`` on the command line makes ``DIR`` the Hydra run directory, so Hydra itself
writes there (``.hydra/``, ``predict.log``) before the task function runs:
:func:`refuse_given_output_dir` checks the command line before Hydra starts.
Import-light: no torch or Lightning.
"""

from __future__ import annotations

import os
import sys

from detr_lightning.errors import ExistingOutputError
from detr_lightning.utils import output_dir_override, runs_one_job

OUTPUT_NAMES = ("predictions.json", "images.json", "panoptic.json", "drawn", "panoptic")

# visualize's figures: <stem>_decoder.png and <stem>_encoder.png, in sub-folders as the inputs
FIGURE_SUFFIXES = ("_decoder.png", "_encoder.png")


def earlier_figures(out_dir: str) -> list[str]:
    """visualize's figures already under ``out_dir`` (relative paths, sorted)."""
    root = os.path.abspath(out_dir)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".hydra"]
        found += [os.path.relpath(os.path.join(dirpath, f), root)
                  for f in filenames if f.endswith(FIGURE_SUFFIXES)]  # fmt: skip
    return sorted(found)


def refuse_earlier_outputs(out_dir: str, entry: str = "predict") -> None:
    """An ``output_dir`` that already holds what ``entry`` (predict, visualize) writes: this
    run's files would sit beside (or over) the earlier ones as if one result. Refused before
    anything loads."""
    if entry == "visualize":
        figures = earlier_figures(out_dir)
        found = figures[:3] + ([f"{len(figures) - 3} more figures"] if len(figures) > 3 else [])
        what = "figures would overwrite or mix with them"
    else:
        found = [name for name in OUTPUT_NAMES if os.path.exists(os.path.join(out_dir, name))]
        what = "predictions would mix with them"
    if found:
        raise ExistingOutputError(
            f"output_dir={out_dir} already holds {', '.join(found)} (an earlier {entry} run's?): "
            f"this run's {what}. Fix: give a new output_dir (or none: a fresh "
            f"outputs/<experiment>/{entry}_<time>), or move those away first."
        )


def given_output_dir(argv: list[str]) -> str | None:
    """The ``output_dir=`` of a command line that runs one job (the run directory), else None
    (a sweep's jobs write into their own folders; a print writes none)."""
    if not runs_one_job(argv):
        return None
    return output_dir_override(argv)


def refuse_given_output_dir(argv: list[str] | None = None, entry: str = "predict") -> None:
    """Before Hydra writes into ``output_dir=DIR``: raise :class:`ExistingOutputError` for a
    ``DIR`` holding an earlier ``entry`` run's outputs (the entry point ends the run with its
    message)."""
    out_dir = given_output_dir(sys.argv[1:] if argv is None else argv)
    if out_dir is not None:
        refuse_earlier_outputs(out_dir, entry)
