"""``make bench``: run every benchmark, each in its own process so peak-memory figures stay separate.

Figures only, no assertions. Pass ``--quick`` to skip the minutes-long end-to-end training run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

BENCHMARKS: list[list[str]] = [
    ["bench_core.py"],
    ["bench_matcher.py"],
    ["bench_data.py"],
    ["bench_train.py"],
]


def main() -> int:
    failures = 0
    for script, *args in BENCHMARKS:
        print(f"== {script} {' '.join(args)}", flush=True)
        result = subprocess.run([sys.executable, str(HERE / script), *args, *sys.argv[1:]])
        failures += result.returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
