"""The prepared device check: the paper's R50 DETR on a GPU, in one short run.

Figures for the README's "Speed and GPU readiness" table, measured in one process:

* the training step (``bench_core.our_train_step``: forward, set loss with aux outputs,
  backward, clipping at 0.1, the config's fused AdamW) and batched inference, in fp32,
  ``bf16-mixed``, ``16-mixed`` (with a gradient scaler) and compiled (``torch.compile``, fp32
  and bf16-mixed): ms per step, images per second, peak memory, the first compiled step's time,
  and whether every loss stayed finite;
* ``--e2e``: the real command line on the generated shapes data, the paper preset with
  ``trainer=gpu``, ``trainer.precision=bf16-mixed`` and ``model.compile=true``: it must finish
  with finite losses and report its graphs and recompiles; with two or more GPUs also a
  ``trainer=ddp trainer.devices=2`` smoke.

Random weights (nothing is downloaded), random targets, one padded batch shape. Writes
``gpu.json`` and ``gpu.md`` to ``--out``. On a CPU (``--device cpu`` with small sizes) the same
code runs, which is how the test suite keeps the script working until a GPU is lent.

``--profile MODE`` adds a ``torch.profiler`` table of that mode's training step (self CPU and
device time per op). ``benchmarks/gpu_check.sh`` runs these parts on a lent machine.

Run: ``python benchmarks/bench_gpu.py --out DIR [--e2e] [--profile bf16-mixed] [--batch 4]
[--size 800 1088]``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import AUTOCAST, _random_targets, our_train_step  # noqa: E402

from detr_lightning.detr.model import build_detr  # noqa: E402
from detr_lightning.utils.attention_backend import turn_off_cudnn_attention  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MODES = ["fp32", "bf16-mixed", "16-mixed", "compiled fp32", "compiled bf16-mixed"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _batch(batch: int, size: tuple[int, int], device: torch.device):
    """Images [B, 3, H, W] padded to ``size``, each image's valid area 75-100 % of each side
    (mask [B, H, W], True = pixel), and 8 random objects per image (normalised cxcywh)."""
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, *size, generator=gen)
    mask = torch.zeros(batch, *size, dtype=torch.bool)
    for i in range(batch):
        h, w = (int(s * (0.75 + 0.25 * torch.rand(1, generator=gen).item())) for s in size)
        mask[i, :h, :w] = True
    targets = [{k: v.to(device) for k, v in t.items()} for t in _random_targets(batch)]
    return pixels.to(device), mask.to(device), targets


def _timed(step: Callable[[], float], steps: int, device: torch.device) -> dict[str, float]:
    """Time ``step`` (returns its loss, or 0) after two untimed calls; the first call's time is
    ``first_s`` (compilation, when compiled)."""
    _reset_peak(device)
    start = time.perf_counter()
    losses = [step()]
    _sync(device)
    first_s = time.perf_counter() - start
    losses.append(step())
    _sync(device)
    start = time.perf_counter()
    losses += [step() for _ in range(steps)]
    _sync(device)
    per_step = (time.perf_counter() - start) / steps
    return {"ms": 1000 * per_step, "first_s": first_s, "peak_gib": _peak_gib(device),
            "finite": all(math.isfinite(x) for x in losses)}  # fmt: skip


def _model(args: argparse.Namespace) -> torch.nn.Module:
    return build_detr(backbone=args.backbone, num_queries=args.queries,
                      enc_layers=args.layers, dec_layers=args.layers)  # fmt: skip


def bench_train(mode: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    torch.manual_seed(0)
    model = _model(args).to(device).train()
    if mode.startswith("compiled"):
        model.compile()
    pixels, mask, targets = _batch(args.batch, tuple(args.size), device)
    step = our_train_step(model, pixels, mask, targets, mode.removeprefix("compiled "))
    figures = _timed(step, args.steps, device)
    figures["images_per_s"] = 1000 * args.batch / figures["ms"]
    return figures


def bench_inference(mode: str, args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    model = _model(args).to(device).eval()
    if mode.startswith("compiled"):
        model.compile()
    dtype = AUTOCAST[mode.removeprefix("compiled ")]
    pixels, mask, _ = _batch(args.batch, tuple(args.size), device)

    @torch.inference_mode()
    def forward() -> float:
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            out = model(pixels, mask)
        return float(out["pred_boxes"].float().sum())

    figures = _timed(forward, args.steps, device)
    figures["images_per_s"] = 1000 * args.batch / figures["ms"]
    return figures


def profile_train(mode: str, args: argparse.Namespace, device: torch.device) -> str:
    """Where a training step's time goes: three steps of ``mode`` under ``torch.profiler``, the
    ops with the most self CPU time and the most device time (a table per sort)."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = _model(args).to(device).train()
    pixels, mask, targets = _batch(args.batch, tuple(args.size), device)
    step = our_train_step(model, pixels, mask, targets, mode)
    step(), step()
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            step()
        _sync(device)
    averages = prof.key_averages()
    tables = [averages.table(sort_by="self_cpu_time_total", row_limit=15)]
    if device.type == "cuda":
        tables.append(averages.table(sort_by="self_cuda_time_total", row_limit=15))
    return "\n".join(tables)


def e2e_commands(out: Path, gpus: int) -> dict[str, list[str]]:
    """The paper preset on the shapes data through ``python -m detr_lightning.train``, bf16 and
    compiled (100 steps, 20 val batches); a DDP smoke when there are two GPUs."""
    base = [sys.executable, "-m", "detr_lightning.train", "experiment=r50", "data=shapes",
            "model.net.backbone.pretrained=false", "logger=csv", "data.num_workers=4",
            "data.pad_to_multiple=64", "trainer.max_epochs=1", "trainer.max_steps=100",
            "trainer.limit_val_batches=20", "trainer.limit_test_batches=20",
            "trainer.precision=bf16-mixed", "model.compile=true"]  # fmt: skip
    runs = {"bf16-mixed + compile, 1 GPU": [*base, "trainer=gpu", f"hydra.run.dir={out}/e2e_gpu"]}
    if gpus >= 2:
        runs["DDP, 2 GPUs"] = [*base, "trainer=ddp", "trainer.devices=2",
                               f"hydra.run.dir={out}/e2e_ddp"]  # fmt: skip
    return runs


def e2e_figures(run_dir: Path) -> dict:
    """From a run's csv log: every logged ``train/loss`` finite, Dynamo's graphs in total and per
    epoch (``compile/*``), and the test AP of ``metrics.json``."""
    import csv

    logs = sorted(run_dir.glob("csv/**/metrics.csv")) or sorted(run_dir.glob("**/metrics.csv"))
    rows = list(csv.DictReader(logs[-1].open())) if logs else []
    column = lambda key: [float(r[key]) for r in rows if r.get(key)]  # noqa: E731
    losses, graphs = column("train/loss"), column("compile/graphs")
    metrics = run_dir / "metrics.json"
    return {"train_losses_logged": len(losses),
            "losses_finite": bool(losses) and all(math.isfinite(x) for x in losses),
            "graphs": graphs[-1] if graphs else None,
            "recompiles_per_epoch": column("compile/recompiles_epoch"),
            "test_AP": json.loads(metrics.read_text()).get("AP") if metrics.exists() else None}  # fmt: skip


def table(results: dict) -> str:
    rows = ["| | ms / step | images / s | peak GiB | first step s | losses finite |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for kind in ("train", "inference"):
        for mode, f in results[kind].items():
            peak = "–" if f["peak_gib"] is None else f"{f['peak_gib']:.1f}"
            rows.append(f"| {kind}, {mode} | {f['ms']:.1f} | {f['images_per_s']:.1f} | {peak} "
                        f"| {f['first_s']:.1f} | {f['finite']} |")  # fmt: skip
    for name, run in results.get("e2e", {}).items():
        rows.append(f"| command line, {name} (rc {run['rc']}, {run['minutes']:.1f} min, "
                    f"{run['graphs']} graphs) | | | | | {run['losses_finite']} |")  # fmt: skip
    return "\n".join(rows)


def _save(results: dict, out: Path) -> None:
    (out / "gpu.json").write_text(json.dumps(results, indent=2))
    (out / "gpu.md").write_text(table(results) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "gpu")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--batch", type=int, default=4)  # the paper's images per GPU
    parser.add_argument("--size", type=int, nargs=2, default=[800, 1088])  # a padded COCO batch
    parser.add_argument("--steps", type=int, default=10)
    # Fewer queries shrink the decoder, whose bf16 matmuls CPUs without bf16 instructions emulate
    # slowly: what the suite's CPU run of this script uses. At least 8 (objects per image).
    parser.add_argument("--queries", type=int, default=100, help="object queries (paper: 100)")
    # The suite's CPU run checks the script, not the paper model's figures: fewer layers.
    parser.add_argument("--layers", type=int, default=6, help="encoder and decoder layers each")
    parser.add_argument("--modes", default=",".join(MODES), help="'' for none (--e2e alone)")
    parser.add_argument("--profile", choices=list(AUTOCAST), help="profile this mode's step")
    parser.add_argument("--e2e", action="store_true", help="also the command-line runs")
    parser.add_argument("--e2e-timeout", type=float, default=None, help="seconds per run")
    parser.add_argument(
        "--cudnn-attention",
        action="store_true",
        help="keep cuDNN's attention kernel, which training turns off on CUDA",
    )
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if not args.cudnn_attention:  # as LitDETR trains
        turn_off_cudnn_attention(device)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
                     else "cpu", "torch": torch.__version__, "batch": args.batch,
                     "size": args.size, "cudnn_attention": args.cudnn_attention,
                     "train": {}, "inference": {}}  # fmt: skip
    # Saved after every figure: a lease that ends mid-run still leaves what was measured.
    for mode in filter(None, args.modes.split(",")):
        for kind, bench in (("train", bench_train), ("inference", bench_inference)):
            results[kind][mode] = bench(mode, args, device)
            print(f"[gpu] {kind:9s} {mode:20s} {results[kind][mode]}", flush=True)
            _save(results, args.out)
    if args.profile:
        text = profile_train(args.profile, args, device)
        (args.out / "profile.txt").write_text(text)
        print(text, flush=True)
    if args.e2e:
        results["e2e"] = {}
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        for name, command in e2e_commands(args.out, gpus).items():
            start = time.perf_counter()
            try:
                rc = subprocess.run(command, cwd=REPO, timeout=args.e2e_timeout).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
            run_dir = Path(command[-1].split("=", 1)[1])
            results["e2e"][name] = {"rc": rc, "minutes": (time.perf_counter() - start) / 60,
                                    **e2e_figures(run_dir)}  # fmt: skip
            _save(results, args.out)
    _save(results, args.out)
    print(table(results))
    failed = [m for k in ("train", "inference") for m, f in results[k].items() if not f["finite"]]
    failed += [n for n, r in results.get("e2e", {}).items()
               if r["rc"] != 0 or not r["losses_finite"]]  # fmt: skip
    if failed:
        print(f"[gpu] FAILED: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
