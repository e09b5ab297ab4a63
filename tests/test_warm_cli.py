"""support/warm_cli.py runs a module as ``python -m`` does: the same output and exit status as a
fresh interpreter for each way a run can end, and a timeout that kills the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import warm_cli

PROBE = """
import os, sys, warnings
print("argv", sys.argv[1:], "main", __name__, "cwd", os.getcwd())
print("path0", sys.path[0] == os.getcwd(), "env", os.environ.get("PROBE_VALUE"))
print("importable", __import__("probe_helper").VALUE)
warnings.warn("a warning PYTHONWARNINGS=ignore hides")
sys.stdout.flush()
os.system("echo from a child process")
end = sys.argv[1]
if end == "raise":
    raise ValueError("bad input named here")
if end == "exit3":
    sys.exit(3)
if end == "exitmsg":
    sys.exit("stopped: a message")
if end == "kill":
    os.kill(os.getpid(), 9)
print("ended normally", file=sys.stderr)
"""


@pytest.fixture()
def probe(tmp_path) -> tuple[Path, dict[str, str]]:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "probe_module.py").write_text(PROBE)
    (lib / "probe_helper.py").write_text("VALUE = 7\n")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    env = {**os.environ, "PROBE_VALUE": "x", "PYTHONPATH": str(lib), "PYTHONWARNINGS": "ignore"}
    return cwd, env


@pytest.mark.parametrize("end", ["normal", "raise", "exit3", "exitmsg", "kill"])
def test_a_warm_run_ends_as_a_fresh_interpreter_does(probe, end: str) -> None:
    cwd, env = probe
    args = [end, "--flag=1"]
    fresh = subprocess.run([sys.executable, "-m", "probe_module", *args], cwd=cwd, env=env,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    warm = warm_cli.run("probe_module", args, cwd, env, timeout=60)
    assert warm.returncode == fresh.returncode
    assert warm.stdout == fresh.stdout
    assert f"argv ['{end}', '--flag=1'] main __main__ cwd {cwd}" in warm.stdout
    assert "path0 True env x" in warm.stdout and "from a child process" in warm.stdout
    if end == "raise":  # the traceback's last line, as the interpreter prints it
        assert warm.stderr.splitlines()[-1] == fresh.stderr.splitlines()[-1]
    else:
        assert warm.stderr == fresh.stderr
    assert "warning" not in warm.stderr


def test_a_run_past_its_timeout_is_killed(probe) -> None:
    cwd, env = probe
    (cwd / "sleeper.py").write_text(
        "import os, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '300'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    with pytest.raises(subprocess.TimeoutExpired) as err:
        warm_cli.run("sleeper", [], cwd, env, timeout=3)
    grandchild = int(err.value.output.split()[0])
    # the whole process group went: the grandchild is gone (or a zombie awaiting its reaper)
    state = Path(f"/proc/{grandchild}/stat")
    assert not state.exists() or state.read_text().split()[2] == "Z"
    assert warm_cli.run("probe_module", ["normal"], cwd, env, timeout=60).returncode == 0
