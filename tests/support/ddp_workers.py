"""The start method of the tests' two-process runs (``mp.start_processes``, Lightning's
``DDPStrategy``): warm, as the CLI runs are (warm_cli.py).

``spawn`` starts a new interpreter per worker, and each pays about 8 s importing torch,
torchvision and Lightning before the test's code runs. ``forkserver`` pickles the worker's
function and arguments as ``spawn`` does and applies the parent's ``sys.path`` and working
directory the same way, but forks every worker from one server process that has imported those
libraries once and run no torch operation (so no thread pool is copied into the workers).

The server keeps the environment variables and the stdout/stderr of the moment it started, so a
test must not rely on either reaching its workers; a worker's exception still reaches the test,
through torch.multiprocessing's error files. ``DETR_TESTS_FRESH_PYTHON=1`` gives ``spawn`` back.
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Iterator

import torch
from warm_cli import WARM_MODULES, fresh_python


def start_method() -> str:
    """``"forkserver"`` with :data:`warm_cli.WARM_MODULES` preloaded (the preload takes effect
    when the server starts: at the first such run of the session), or ``"spawn"`` under
    ``DETR_TESTS_FRESH_PYTHON=1``."""
    if fresh_python():
        return "spawn"
    multiprocessing.set_forkserver_preload(list(WARM_MODULES))
    return "forkserver"


@contextlib.contextmanager
def tensors_by_file_name() -> Iterator[None]:
    """Within: tensors pickled for workers travel as named shared-memory files instead of file
    descriptors. A forkserver passes at most 252 descriptors to a worker, fewer than the tensors
    of a config-built LitDETR (Lightning's launcher pickles the trainer with its model)."""
    previous = torch.multiprocessing.get_sharing_strategy()
    torch.multiprocessing.set_sharing_strategy("file_system")
    try:
        yield
    finally:
        torch.multiprocessing.set_sharing_strategy(previous)
