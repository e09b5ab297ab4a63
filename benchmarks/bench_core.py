"""DETR core figures on CPU: training step, inference forward and peak memory.

R50 backbone (random init, frozen BN, stem + layer1 frozen), batch 2 at 512x512, the paper's
transformer (6 + 6 layers, d 256, 100 queries, 92 logits), set loss with aux outputs, AdamW with
the paper's two learning rates and gradient clipping at 0.1. Compare with REFERENCE.md (outside
this repository: ../shared/REFERENCE.md beside the checkout), which measured the official code
on this kind of machine (2.0 s per step, 0.34 s inference).
Run: ``python benchmarks/bench_core.py [--size 512] [--backbone resnet50] [--dilation]``.
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from detr_lightning.detr.model import build_detr
from detr_lightning.loss import HungarianMatcher, SetCriterion

REPO = Path(__file__).resolve().parents[1]
AUTOCAST = {"fp32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def _random_targets(batch: int, per_image: int = 8) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    targets = []
    for _ in range(batch):
        centre = torch.rand(per_image, 2, generator=gen) * 0.6 + 0.2
        size = torch.rand(per_image, 2, generator=gen) * 0.3 + 0.05
        targets.append(
            {
                "labels": torch.randint(1, 91, (per_image,), generator=gen),
                "boxes": torch.cat([centre, size], dim=1),
            }
        )
    return targets


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far, in GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def param_groups(model: nn.Module) -> list[dict]:
    """engine/main.py's groups: the backbone at 1e-5, the rest at the optimizer's lr."""
    backbone = [p for n, p in model.named_parameters() if "backbone" in n and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if "backbone" not in n and p.requires_grad]
    return [{"params": rest}, {"params": backbone, "lr": 1e-5}]


def our_optimizer(model: nn.Module, **override) -> torch.optim.Optimizer:
    """The optimizer of conf/model/detr.yaml (fused AdamW) over the same groups."""
    node = OmegaConf.load(REPO / "conf" / "model" / "detr.yaml").optimizer
    return instantiate(node, **override)(param_groups(model))


def our_train_step(
    model: nn.Module, pixels, mask, targets, precision: str = "fp32", **optimizer_override
) -> Callable[[], float]:
    """LitDETR's step under Lightning's ``trainer.precision`` (``fp32``, ``bf16-mixed`` or
    ``16-mixed``: forward and loss under autocast on the pixels' device, the matcher and the
    losses float32 inside; ``16-mixed`` with a gradient scaler). The step returns its loss."""
    criterion = SetCriterion(91, HungarianMatcher())
    optimizer = our_optimizer(model, **optimizer_override)
    dtype, device = AUTOCAST[precision], pixels.device.type
    scaler = torch.amp.GradScaler(device, enabled=dtype is torch.float16)

    def step() -> float:  # LitDETR.training_step + Lightning's zero_grad / clip / step
        with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            outputs = model(pixels, mask, targets=targets)
            total = criterion.weighted_total(criterion(outputs, targets))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        scaler.step(optimizer)
        scaler.update()
        return float(total.detach())

    return step


def bench_core(
    size: int = 512,
    batch: int = 2,
    backbone: str = "resnet50",
    dilation: bool = False,
    steps: int = 3,
) -> dict[str, float]:
    """Time training steps and inference forwards; print and return the figures (seconds, GiB)."""
    torch.manual_seed(0)
    model = build_detr(backbone=backbone, dilation=dilation, num_classes=91)
    criterion = SetCriterion(91, HungarianMatcher())
    optimizer = torch.optim.AdamW(param_groups(model), lr=1e-4, weight_decay=1e-4)
    pixel_values = torch.randn(batch, 3, size, size)
    pixel_mask = torch.ones(batch, size, size, dtype=torch.bool)
    targets = _random_targets(batch)

    def train_step() -> None:
        outputs = model(pixel_values, pixel_mask, targets=targets)
        losses = criterion(outputs, targets)
        total = criterion.weighted_total(losses)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()

    model.train()
    train_step()  # warm-up: allocator, AdamW state
    start = time.perf_counter()
    for _ in range(steps):
        train_step()
    step_s = (time.perf_counter() - start) / steps

    model.eval()
    single = pixel_values[:1], pixel_mask[:1]
    with torch.inference_mode():
        model(*single)
        start = time.perf_counter()
        for _ in range(steps):
            model(*single)
    infer_s = (time.perf_counter() - start) / steps
    figures = {"train_step_s": step_s, "inference_s": infer_s, "peak_rss_gib": peak_rss_gib()}
    label = f"{backbone}{' DC5' if dilation else ''} batch {batch} {size}x{size}"
    print(
        f"[core] {label}: training step {step_s:.2f} s, inference forward (batch 1) {infer_s:.2f} s,"
    )
    print(f"[core]   peak RSS {figures['peak_rss_gib']:.2f} GiB, threads {torch.get_num_threads()}")
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--dilation", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    bench_core(args.size, args.batch, args.backbone, args.dilation, args.steps)
