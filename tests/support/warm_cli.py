"""``python -m detr_lightning.<entry point>`` without paying the imports at every run.

Each CLI run of the tests used to start a fresh interpreter, and about 8 s of each went to
importing torch, torchvision (which pulls in torch._dynamo) and Lightning: most of the default
suite's time. A server process imports those libraries once, runs no torch operation (so no
thread pool exists to be copied), and forks one child per run. The child does what
``python -m`` does: the requested working directory, environment, ``sys.argv`` and
``sys.path`` (the working directory first, then ``PYTHONPATH``), the entry point run as
``__main__`` by runpy, stdout and stderr (file descriptors, so DDP workers' output too) into
files, the exit handlers, and the exit status: 1 with a traceback for an uncaught exception,
``-signal`` when killed. The entry points themselves are never imported by the server, so
every run executes them from their source as a user's run does.

``run`` mirrors ``subprocess.run(..., capture_output=True, text=True, timeout=...)``;
``fresh=True`` (or ``DETR_TESTS_FRESH_PYTHON=1`` for every run) starts a real interpreter
instead, for environment variables that libraries read at import time.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Imported by the server before it forks: what every entry point imports anyway.
WARM_MODULES = (
    "torch", "torchvision", "lightning", "hydra", "omegaconf", "torchmetrics",
    "detr_lightning.lit_module", "detr_lightning.utils.build", "detr_lightning.data.datamodule",
)  # fmt: skip


def _serve() -> None:
    """Server loop: one JSON request per stdin line; answers the child's pid, then its status."""
    import importlib

    for name in WARM_MODULES:
        importlib.import_module(name)
    requests, replies = sys.stdin.buffer, os.fdopen(os.dup(1), "w", buffering=1)
    for line in requests:
        job = json.loads(line)
        sys.stdout.flush(), sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(job, replies.fileno())  # never returns
        replies.write(json.dumps({"pid": pid}) + "\n")
        _, status = os.waitpid(pid, 0)
        replies.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")


def _child(job: dict, reply_fd: int) -> None:
    import runpy
    import traceback
    import warnings

    code = 1
    try:
        os.setsid()  # its own process group: a timeout kills the run and its workers
        os.close(reply_fd)
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        extra = [p for p in job["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
        sys.path[:1] = [os.getcwd(), *extra]
        if job["env"].get("PYTHONWARNINGS"):
            warnings.simplefilter(job["env"]["PYTHONWARNINGS"])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
            out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
        module = job["module"]
        sys.argv = [module, *job["args"]]
        try:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            if exit_.code is not None and not isinstance(exit_.code, int):
                print(exit_.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)


class _Server:
    """The forking server, started on first use and stopped when the tests end."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0
        )
        self._pending = b""  # read past the last reply: select() cannot see a reader's buffer
        atexit.register(self.close)

    def request(self, job: dict) -> None:
        data = memoryview(json.dumps(job).encode() + b"\n")
        while data:  # an unbuffered write may take part of a large request
            data = data[self.proc.stdin.write(data) :]

    def reply(self, timeout: float | None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._pending:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.proc.stdout], [], [], wait)[0]:
                raise TimeoutError
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the warm CLI server exited ({self.proc.poll()})")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)


_server: _Server | None = None


def fresh_python() -> bool:
    """``DETR_TESTS_FRESH_PYTHON=1``: every run and worker in a new interpreter instead."""
    return os.environ.get("DETR_TESTS_FRESH_PYTHON") == "1"


def run(
    module: str,
    args: list[str],
    cwd: Path | str,
    env: dict[str, str],
    timeout: float,
    fresh: bool = False,
) -> subprocess.CompletedProcess:
    """``python -m module args`` in ``cwd`` with exactly ``env``; stdout and stderr captured as
    text. Raises ``subprocess.TimeoutExpired`` (after killing the run) past ``timeout``."""
    command = [sys.executable, "-m", module, *args]
    if fresh or fresh_python():
        return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
    global _server
    if _server is None or _server.proc.poll() is not None:
        _server = _Server()
    with tempfile.TemporaryDirectory() as tmp:
        outs = {name: os.path.join(tmp, name) for name in ("stdout", "stderr")}
        job = {"module": module, "args": list(args), "cwd": str(cwd), "env": dict(env), **outs}
        _server.request(job)
        pid = _server.reply(None)["pid"]
        start = time.monotonic()
        try:
            status = _server.reply(timeout)["status"]
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):  # it may end as the time runs out
                os.killpg(pid, signal.SIGKILL)
            _server.reply(None)
            status = None
        text = {name: Path(path).read_text(errors="replace") for name, path in outs.items()}
    if status is None:
        raise subprocess.TimeoutExpired(
            command, time.monotonic() - start, output=text["stdout"], stderr=text["stderr"]
        )
    return subprocess.CompletedProcess(command, status, text["stdout"], text["stderr"])


if __name__ == "__main__":
    _serve()
