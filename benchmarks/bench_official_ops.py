"""Where the fp32 training step's time goes, ours against the official code, op by op.

``python benchmarks/bench_official_ops.py --official PATH [--steps 3] [--rounds 2 | --quick]
[--threads N]``: the training steps of ``bench_official.py`` (same weights, batch 2 at 512²)
under ``torch.profiler``, alternating official and ours for ``--rounds`` rounds of ``--steps``
steps each. Prints the self CPU milliseconds per step of the costliest ops and of op families
(convolutions, matrix products, dropout masks, the rest), and the ceilings that the
compute-bound ops set: the official step divided by our convolutions (and matrix products)
alone, the ratio that our step would reach if everything else in it cost nothing. Figures, not
assertions.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import _random_targets, our_train_step  # noqa: E402
from bench_official import (  # noqa: E402
    build_official,
    is_official_checkout,
    official_train_step,
    ours_like,
)

FAMILIES = {
    "convolutions (forward, backward)": ("convolution", "conv2d"),
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul"),
    "dropout masks": ("bernoulli", "random_"),
}


def family(op: str) -> str:
    for name, needles in FAMILIES.items():
        if any(n in op for n in needles):
            return name
    return "the rest"


def self_ms_per_step(step, steps: int) -> Counter:
    """Self CPU milliseconds per step of each op over ``steps`` calls of ``step``."""
    with profile() as prof:
        for _ in range(steps):
            step()
    return Counter({e.key: e.self_cpu_time_total / 1e3 / steps for e in prof.key_averages()})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", default=os.environ.get("OFFICIAL_DETR"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--quick", action="store_true", help="one round")
    args = parser.parse_args()
    if args.quick:
        args.rounds = 1
    if not is_official_checkout(args.official):
        print("[ops] skipped: pass --official (or set OFFICIAL_DETR to) a checkout of "
              "facebookresearch/detr")  # fmt: skip
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    official, criterion = build_official(args.official)
    pixels = torch.randn(2, 3, 512, 512)
    mask = torch.ones(2, 512, 512, dtype=torch.bool)
    targets = _random_targets(2)
    steps = {
        "official": official_train_step(official.train(), criterion, pixels, mask, targets),
        "ours": our_train_step(ours_like(official).train(), pixels, mask, targets),
    }
    for step in steps.values():  # warm-up: allocator, oneDNN primitives, optimizer state
        step()
    ops = {name: Counter() for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            ops[name] += self_ms_per_step(step, args.steps)
    ops = {name: Counter({k: v / args.rounds for k, v in c.items()}) for name, c in ops.items()}

    print(f"[ops] fp32 training step, batch 2 at 512², {torch.get_num_threads()} threads, "
          f"{args.rounds} x {args.steps} steps each; self CPU ms per step")  # fmt: skip
    print(f"[ops]   {'':40s} {'official':>9s} {'ours':>9s}")
    fams = {name: Counter() for name in steps}
    for name, c in ops.items():
        for op, ms in c.items():
            fams[name][family(op)] += ms
    for fam in [*FAMILIES, "the rest"]:
        print(f"[ops]   {fam:40s} {fams['official'][fam]:9.0f} {fams['ours'][fam]:9.0f}")
    total = {name: sum(c.values()) for name, c in ops.items()}
    print(f"[ops]   {'total':40s} {total['official']:9.0f} {total['ours']:9.0f}  "
          f"(ratio {total['official'] / total['ours']:.2f})")  # fmt: skip
    conv = fams["ours"]["convolutions (forward, backward)"]
    mm = conv + fams["ours"]["matrix products"]
    print(f"[ops]   ceiling: official total / our convolutions = {total['official'] / conv:.2f}; "
          f"/ our convolutions and matrix products = {total['official'] / mm:.2f}")  # fmt: skip
    print(f"[ops] costliest ops ({args.top}):")
    union = ops["official"] + ops["ours"]
    for op, _ in union.most_common(args.top):
        print(f"[ops]   {op[:40]:40s} {ops['official'][op]:9.1f} {ops['ours'][op]:9.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
