"""``model.compile=true``: how many graphs TorchDynamo compiles as batch shapes vary.

A DETR batch is padded to its largest image, so the input shape changes from batch to batch.
This prints, for one epoch of a COCO-like size distribution under the paper's multi-scale
augmentation (batch 2), the number of distinct padded shapes with ``data.pad_to_multiple``
unset, 32 and 64, then feeds the first ``--batches`` of those shapes to a compiled (small)
DETR and counts the graphs Dynamo compiles. Recompiles are decided by Dynamo's guards, before
any backend runs, so the count is the same with inductor on a GPU; the backend here is
"eager" to keep the run short. Figures, not assertions.
Run: ``python benchmarks/bench_compile.py [--batches 40] [--images 2000]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_data import coco_like_sizes, transformed_sizes  # noqa: E402

from detr_lightning.compile import compiled_graphs  # noqa: E402
from detr_lightning.data.transforms import make_train_transforms  # noqa: E402
from detr_lightning.detr.model import build_detr  # noqa: E402


def batch_shapes(sizes: np.ndarray, batch: int, multiple: int | None) -> list[tuple[int, int]]:
    """Padded (H, W) of consecutive batches of ``sizes`` (already shuffled)."""
    shapes = []
    for start in range(0, len(sizes), batch):
        h, w = (int(v) for v in sizes[start : start + batch].max(0))
        if multiple:
            h, w = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        shapes.append((h, w))
    return shapes


def count_graphs(shapes: list[tuple[int, int]], batch: int) -> list[int]:
    """Graphs compiled so far after each batch, for a fresh compiled small DETR."""
    torch._dynamo.reset()
    start = compiled_graphs()
    net = build_detr("resnet18", num_classes=91, hidden_dim=64, nheads=4, enc_layers=1,
                     dec_layers=2, dim_feedforward=128, num_queries=20)  # fmt: skip
    net.compile(backend="eager")
    counts = []
    with torch.no_grad():
        for h, w in shapes:
            mask = torch.zeros(batch, h, w, dtype=torch.bool)
            mask[0] = True
            mask[1:, : h - h // 7, : w - w // 5] = True  # the other images are smaller
            net(torch.randn(batch, 3, h, w), mask)
            counts.append(compiled_graphs() - start)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="8 batches")
    args = parser.parse_args()
    n_batches = 8 if args.quick else args.batches
    sizes = transformed_sizes(coco_like_sizes(args.images), make_train_transforms())
    print(f"compile: COCO-like sizes, paper augmentation, batch {args.batch}, "
          f"{len(sizes) // args.batch} batches per epoch of {len(sizes)} images")  # fmt: skip
    for multiple in (None, 32, 64):
        shapes = batch_shapes(sizes, args.batch, multiple)
        start = time.perf_counter()
        counts = count_graphs(shapes[:n_batches], args.batch)
        print(f"  pad_to_multiple={str(multiple):4s}: {len(set(shapes)):4d} distinct shapes per "
              f"epoch; graphs after 1/2/5/{n_batches} batches: {counts[0]}/{counts[1]}/"
              f"{counts[4]}/{counts[-1]} ({time.perf_counter() - start:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
