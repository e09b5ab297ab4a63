"""Atomic checkpoint files: a reader sees the old complete file or the new complete one, never a
torn one, whatever kills the writer (SIGKILL, OOM killer, pre-emption, power loss).

Lightning's own ``_atomic_save`` serialises to memory and then writes the target through an
fsspec transaction, which for local paths stages the bytes under ``$TMPDIR``: the final move is
only a rename when ``$TMPDIR`` is on the run directory's filesystem (on a cluster it usually is
not, and the move becomes a copy that a kill can interrupt). Here the temp file lives in the
target's own directory, so ``os.replace`` is always a same-filesystem rename.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any

import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO
from typing_extensions import override

from detr_lightning.utils import current_umask

log = logging.getLogger(__name__)

_TMP_SUFFIX = ".tmp"


# mkstemp creates 0600 files; a checkpoint gets the mode a plain open() would give it.
_FILE_MODE = 0o666 & ~current_umask()


def _tmp_prefix(path: str) -> str:
    # Hidden and with a different suffix: Lightning's last-checkpoint search (``last*.ckpt``) and
    # ``ckpt_path=last`` never mistake a leftover temp file for a checkpoint.
    return f".{os.path.basename(path)}."


def _fsync_dir(dirname: str) -> None:
    """Persist the directory entry of a rename (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(dirname, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Write a file atomically: ``write(f)`` fills a temp file next to ``path``, which is flushed,
    fsync'd and renamed over ``path`` (then the directory is fsync'd). On any error the temp file
    is removed and ``path`` is untouched."""
    path = os.fspath(path)
    dirname = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(dirname, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=_TMP_SUFFIX, dir=dirname)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _FILE_MODE)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(err, OSError | RuntimeError) and not isinstance(err, NotImplementedError):
            raise OSError(_write_failure(path, dirname, err)) from err
        raise
    _fsync_dir(dirname)
    remove_stale_temp_files(path)


_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)


def _os_error(err: BaseException | None) -> OSError | None:
    # torch's zip writer reports a failed write (a full disk, the file-size limit) as a
    # RuntimeError ("unexpected pos ..."), the OSError only chained to it
    while err is not None:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        err = err.__cause__ or err.__context__
    return None


def _write_failure(path: str, dirname: str, err: BaseException) -> str:
    """The message of a failed write: the target (never the temp file), the reason, the fix."""
    cause = _os_error(err)
    # strerror, not str(err): an OSError of mkstemp names the hidden temp file, not the target
    text = cause.strerror if cause is not None and cause.strerror else str(err)
    first = text.splitlines()[0] if text else type(err).__name__
    code = cause.errno if cause is not None else None
    head = f"{path}: writing failed ({first})"
    kept = "The previous file, if any, is unchanged."
    if code == errno.EFBIG:
        return (
            f"{head}: the file would exceed the largest file this process may write (`ulimit "
            f"-f`, a scheduler's file-size limit, or the filesystem's). {kept} Fix: raise the "
            "limit (`ulimit -f unlimited`), or write elsewhere (hydra.run.dir=...)."
        )
    if code in _NOT_WRITABLE:
        return (
            f"{head}: its folder {dirname} is not writable (read-only filesystem or "
            f"permissions). {kept} Fix: make it writable, or write elsewhere: a writable "
            "hydra.run.dir=... (the whole run's folder)."
        )
    room = ""
    with contextlib.suppress(OSError):
        room = f"; {shutil.disk_usage(dirname).free / 2**20:.0f} MiB free on its filesystem"
    why = " (out of space or over quota)" if code in _NO_ROOM else ""
    return (
        f"{head}{room}{why}. {kept} Fix: free space there (or raise the quota), or write "
        "elsewhere (hydra.run.dir=...)."
    )


def remove_stale_temp_files(path: str | os.PathLike) -> list[str]:
    """Delete temp files a killed writer left beside ``path``; returns their paths.

    Called after a successful write of the same target: one writer per file (rank 0), so any
    temp file of that target still present belongs to a dead process."""
    path = os.fspath(path)
    pattern = os.path.join(
        glob.escape(os.path.dirname(os.path.abspath(path))), glob.escape(_tmp_prefix(path))
    )
    stale = glob.glob(pattern + "*" + _TMP_SUFFIX, include_hidden=True)
    for leftover in stale:
        with contextlib.suppress(OSError):
            os.unlink(leftover)
    return stale


# The temp file names atomic_write gives: ".<target name>.<mkstemp's 8 characters>.tmp".
_TMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]{8}" + re.escape(_TMP_SUFFIX))


def remove_abandoned_temp_files(folder: str | os.PathLike, idle_s: float = 600.0) -> list[str]:
    """Delete the temp files of writes a killed process left in ``folder`` (e.g. a dead run's
    ``checkpoints/``, when a new run resumes from it); returns their paths.

    A file counts as abandoned when nothing has written to it for ``idle_s`` seconds: a live
    writer is writing it continuously, and another process may still own the folder (a run
    that is still going, whose ``last.ckpt`` a ``ckpt_path=last`` picked)."""
    pattern = os.path.join(glob.escape(os.fspath(folder)), ".*" + _TMP_SUFFIX)
    removed = []
    for path in glob.glob(pattern, include_hidden=True):
        if not _TMP_NAME.fullmatch(os.path.basename(path)):
            continue
        with contextlib.suppress(OSError):
            if time.time() - os.path.getmtime(path) > idle_s:
                size = os.path.getsize(path)
                os.unlink(path)
                removed.append(path)
                log.warning("removed %s (%.1f MiB), left by a checkpoint write that was killed",
                            path, size / 2**20)  # fmt: skip
    return removed


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (metrics.json, stage_done.json)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)``, atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning ``CheckpointIO`` plugin: ``TorchCheckpointIO`` with same-directory atomic writes.

    Wired into every trainer by ``utils.build.build_trainer``. Remote (fsspec URL) targets keep
    Lightning's transaction-based write, which is what object stores offer.
    """

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__}.save_checkpoint does not take storage_options "
                f"(got {storage_options!r})"
            )
        if not _is_local_file_protocol(path):
            super().save_checkpoint(checkpoint, path)
            return
        atomic_torch_save(checkpoint, path)
        log.debug("saved checkpoint %s", path)
