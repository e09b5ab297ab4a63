"""``make bench``: run every benchmark, each in its own process so peak-memory figures stay separate.

Figures only, no assertions, except check_panopticapi.py (exits 1 where our PQ differs from
panopticapi's). A full run takes more than half an hour on 2 CPU cores: bench_train.py trains the
shapes preset for its 13-minute budget, and every other script runs its full settings. Pass
``--quick`` (``make bench ARGS=--quick``) to skip that training run and use each script's smaller
settings: about 11 minutes on 2 cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (script, accepts --quick)
BENCHMARKS: list[tuple[str, bool]] = [
    ("bench_core.py", False),
    ("bench_flops.py", False),  # GFLOPs and parameters of the paper presets vs Table 1
    ("bench_panoptic.py", False),  # the panoptic model's step and inference next to the detector's
    ("bench_matcher.py", False),
    ("bench_data.py", True),
    ("bench_train.py", True),
    ("bench_shapes_profile.py", True),  # where a shapes training step goes
    ("bench_inference.py", True),  # eager vs torch.compile vs ONNX Runtime latency ratios
    ("bench_official.py", True),  # vs facebookresearch/detr at OFFICIAL_DETR (skipped if unset)
    ("bench_official_ops.py", True),  # the same training steps, op families (skipped if unset)
    ("check_panopticapi.py", False),  # PQ vs panopticapi at PANOPTICAPI (skipped if unset)
    ("bench_compile.py", True),  # model.compile: distinct batch shapes and Dynamo graphs
]


def main() -> int:
    failures = 0
    quick = ["--quick"] if "--quick" in sys.argv[1:] else []
    for script, takes_quick in BENCHMARKS:
        args = quick if takes_quick else []
        print(f"== {script} {' '.join(args)}", flush=True)
        result = subprocess.run([sys.executable, str(HERE / script), *args])
        failures += result.returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
