"""The images ``input=`` names (predict, visualize): one file, or a folder searched recursively,
through linked folders, leaving out what holds no photos of the user's (hidden folders, earlier
run directories, this run's ``output_dir``)."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from detr_lightning.errors import MissingFileError

log = logging.getLogger(__name__)

# What PIL decodes and people keep photos in; matched case-insensitively.
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm",
)  # fmt: skip


@dataclass(frozen=True)
class ImageRecord:
    """One image to predict on.

    Attributes:
        path: the file.
        image_id: the id written to ``predictions.json`` (a COCO split's own ids; 1, 2, ... in
            sorted path order for files and folders).
        file_name: path relative to the input folder (names the drawn PNG and images.json).
        expected_size: (width, height) from a COCO json (EXIF orientation check), else None.
    """

    path: Path
    image_id: int
    file_name: str
    expected_size: tuple[int, int] | None = None


def find_images(source: str | Path, output_dir: str | Path | None = None) -> list[ImageRecord]:
    """One image file, or every file with an :data:`IMAGE_EXTENSIONS` suffix under a folder
    (recursively, following linked folders, sorted by relative path), less what
    :func:`_skip_reason` leaves out (logged in one INFO line). Sub-folders that cannot be read
    and broken links are left out with a WARNING naming them and why. Raises MissingFileError
    (a FileNotFoundError) naming ``input=``.

    Args:
        source: ``input=``, an image file (tried whatever its name) or a folder.
        output_dir: this run's output folder: not searched when it lies inside ``source``.
    """
    root = Path(source)
    if root.is_file():  # given explicitly: tried whatever its suffix or name
        return [ImageRecord(root, 1, root.name)]
    if not root.is_dir():
        raise MissingFileError(f"input={source}: no such image file or folder")
    found, skipped, unreadable = _search_folder(root, output_dir)
    for path, why in unreadable:
        if path == str(root):  # the folder itself: nothing under it was searched
            raise MissingFileError(
                f"input={source}: the folder cannot be listed ({why}). Fix: its permissions "
                "(chmod u+rx), or another input="
            )
    files = sorted(found, key=lambda p: p.relative_to(root).as_posix())
    left_out = ""
    if skipped:
        left_out = "; ".join(f"{n} {reason}" for reason, n in skipped.items())
        log.info("input=%s: left out %s; to predict such an image, give it as input=<file>",
                 source, left_out)  # fmt: skip
    if unreadable:
        unread = _unreadable_summary(unreadable, root)
        log.warning("input=%s: left out %s; fix their permissions or links, or ignore this if they hold "
                    "no images", source, unread)  # fmt: skip
        left_out = f"{left_out}; {unread}" if left_out else unread
    if not files:
        raise MissingFileError(
            f"input={source}: the folder holds no image ({', '.join(IMAGE_EXTENSIONS)})"
            + (f"; left out {left_out}" if left_out else "")
        )
    return [ImageRecord(p, i + 1, p.relative_to(root).as_posix()) for i, p in enumerate(files)]


def _skip_reason(folder: str, output_dir: str | None, seen: set[str]) -> str | None:
    """Why a sub-folder of the input is not searched, else None (and it is marked seen).

    Hidden folders (``.cache``, ``.ipynb_checkpoints``) hold copies, not photos; a Hydra run
    directory (it holds ``.hydra/``) holds an earlier run's outputs (predict's drawings would
    be predicted again), and this run's own ``output_dir`` will."""
    real = os.path.realpath(folder)
    if os.path.basename(folder).startswith("."):
        return "hidden folder(s) (name starting with '.')"
    if output_dir is not None and real == output_dir:
        return "folder(s) that are this run's output_dir"
    if os.path.isdir(os.path.join(folder, ".hydra")):
        return "earlier run folder(s) (holding .hydra/: a predict, visualize... run's outputs)"
    if real in seen:
        return "folder(s) already searched through another link"
    seen.add(real)
    return None


def _unreadable_summary(unreadable: list[tuple[str, str]], root: Path, shown: int = 5) -> str:
    """``N path(s) that could not be searched: a (why), b (why)... and M more``; paths
    relative to ``root`` (the log line names it), the first ``shown`` in path order."""
    named = [f"{os.path.relpath(path, root)} ({why})" for path, why in sorted(unreadable)]
    more = f" and {len(named) - shown} more" if len(named) > shown else ""
    return f"{len(named)} path(s) that could not be searched: {', '.join(named[:shown])}{more}"


def _search_folder(
    root: Path, output_dir: str | Path | None
) -> tuple[list[Path], Counter, list[tuple[str, str]]]:
    """The image files under ``root``, through linked folders too (``Path.rglob`` skips
    them on Python 3.11), how many folders and files were left out, by reason
    (:func:`_skip_reason`; hidden files), and (path, why) of the folders that could not be read
    and the broken links, which ``os.walk`` alone passes over without a word. Each real folder
    is searched once, so a link back to a parent folder ends instead of recursing forever."""
    seen = {os.path.realpath(root)}
    out = None if output_dir is None else os.path.realpath(output_dir)
    files, skipped, unreadable = [], Counter(), []

    def unreadable_folder(err: OSError) -> None:
        unreadable.append((str(err.filename), err.strerror or type(err).__name__))

    for folder, subfolders, names in os.walk(root, followlinks=True, onerror=unreadable_folder):
        kept = []
        for name in sorted(subfolders):  # sorted: which of two links to one folder names it
            reason = _skip_reason(os.path.join(folder, name), out, seen)
            if reason:
                skipped[reason] += 1
            else:
                kept.append(name)
        subfolders[:] = kept  # os.walk descends only into what is left here
        for path in map(Path(folder).joinpath, names):
            # Whatever its name, a broken link may have been meant to reach a folder of photos.
            if path.is_symlink() and not path.exists() and not path.name.startswith("."):
                unreadable.append((str(path), f"broken link to {os.readlink(path)}"))
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                continue
            if path.name.startswith("."):
                skipped["hidden image file(s) (name starting with '.')"] += 1
            else:
                files.append(path)
    return files, skipped, unreadable
