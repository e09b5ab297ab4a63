"""CPU inference latency: PyTorch eager vs torch.compile vs ONNX Runtime, on the same inputs.

DETR-R50 (random init, 91 classes, 100 queries, the paper's 6 + 6 transformer), one 512x512
image (batch 1, no padding), the exported signature (pixel_values, pixel_mask -> pred_logits,
pred_boxes). Each backend runs ``--iters`` timed forwards after ``--warmup`` untimed ones, in
this one process with the same thread count, the timed calls alternating between backends; the
figures are the medians, and the ratios (eager / backend: > 1 is faster than eager) are what to
compare across machines. Also prints the one-off costs (compilation, export) and each backend's
max abs difference from eager.
Run: ``python benchmarks/bench_inference.py [--size 512] [--iters 10] [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from detr_lightning.detr.model import build_detr
from detr_lightning.inference.onnx_export import DetectorGraph, export_onnx
from detr_lightning.inference.onnx_runtime import OnnxDetector


def _interleaved_medians(
    backends: dict[str, Callable[[], object]], warmup: int, iters: int
) -> dict[str, float]:
    """Median seconds per backend; the timed calls alternate between the backends, so that a
    change of machine load during the run hits all of them alike (the ratios stay fair)."""
    for fn in backends.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(iters):
        for name, fn in backends.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_inference(
    size: int = 512, iters: int = 10, warmup: int = 2, backbone: str = "resnet50"
) -> dict[str, float]:
    """Time the three backends; print and return the medians (s) and one-off costs (s)."""
    torch.manual_seed(0)
    graph = DetectorGraph(build_detr(backbone=backbone, num_classes=91)).eval()
    pixels = torch.randn(1, 3, size, size)
    mask = torch.ones(1, size, size, dtype=torch.bool)
    threads = torch.get_num_threads()
    print(f"DETR {backbone}, 1 x 3 x {size} x {size}, {threads} threads, "
          f"{warmup} warm-up + {iters} timed forwards each")  # fmt: skip
    figures: dict[str, float] = {}
    with torch.inference_mode():
        reference = graph(pixels, mask)
        compiled = torch.compile(graph, dynamic=False)
        start = time.perf_counter()
        out = compiled(pixels, mask)  # the first call compiles
        figures["compile_time"] = time.perf_counter() - start
        figures["compile_diff"] = max(
            (a - b).abs().max().item() for a, b in zip(out, reference, strict=True)
        )

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_onnx(graph.net, Path(tmp) / "detr.onnx", (size, size))
        figures["export_time"] = time.perf_counter() - start
        session = OnnxDetector(path, providers=["CPUExecutionProvider"], threads=threads)
        out = session(pixels, mask)
        figures["onnx_diff"] = max(
            (out[k] - r).abs().max().item()
            for k, r in zip(("pred_logits", "pred_boxes"), reference, strict=True)
        )
        with torch.inference_mode():
            figures.update(_interleaved_medians({
                "eager": lambda: graph(pixels, mask),
                "torch.compile": lambda: compiled(pixels, mask),
                "onnxruntime": lambda: session(pixels, mask),
            }, warmup, iters))  # fmt: skip

    eager = figures["eager"]
    print(f"{'backend':<14} {'median ms':>10} {'eager / backend':>16} {'max |diff|':>11}")
    for name, diff in (("eager", 0.0), ("torch.compile", figures["compile_diff"]),
                       ("onnxruntime", figures["onnx_diff"])):  # fmt: skip
        print(f"{name:<14} {figures[name] * 1e3:>10.1f} {eager / figures[name]:>16.2f} "
              f"{diff:>11.1e}")  # fmt: skip
    print(f"one-off: torch.compile {figures['compile_time']:.1f} s, "
          f"ONNX export {figures['export_time']:.1f} s")  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--quick", action="store_true", help="3 timed forwards per backend")
    args = parser.parse_args()
    iters = 3 if args.quick else args.iters
    bench_inference(args.size, iters, args.warmup, args.backbone)


if __name__ == "__main__":
    main()
