"""Compiled against eager DETR on the same weights and batches: the loss and the gradients.

For each padded batch shape in ``--sizes`` (a new shape makes Dynamo recompile, the second one
with dynamic sizes), the network of ``experiment=<--experiment>`` runs forward and backward
eagerly and compiled (``model.compile=true`` does ``net.compile()``) under ``--precision``, and
one line reports both losses, whether every gradient is finite, the relative gradient
difference (all parameters together, and the parameter where it is largest), and the parameters
whose gradient holds NaN/inf. No optimizer step: the weights stay those of the seed, so any
difference is the compiler's.

Non-finite eager gradients point below the compiler: on an H200 they came from cuDNN's
attention backward (``--cudnn-attention`` keeps that kernel; by default it is off, as in
training: ``detr_lightning.utils.attention_backend``).

Run: ``python benchmarks/compile_check.py [--device cuda] [--precision bf16-mixed]
[--backend aot_eager] [--experiment shapes]``.
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import AUTOCAST, _random_targets  # noqa: E402

from detr_lightning.utils.attention_backend import turn_off_cudnn_attention  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def build(experiment: str, overrides: list[str]) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The preset's network and criterion (91 classes, no ImageNet weights)."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", "logger=csv", *overrides])
    if "pretrained" in cfg.model.net.backbone:  # no ImageNet weights on a lent machine
        cfg.model.net.backbone.pretrained = False
    cfg.model.num_classes = 91
    return instantiate(cfg.model.net), instantiate(cfg.model.criterion)


def step(net, criterion, pixels, mask, targets, dtype) -> tuple[float, dict[str, torch.Tensor]]:
    """Forward, loss and backward; the loss and every parameter's gradient (fp32 copies)."""
    net.zero_grad(set_to_none=True)
    device = pixels.device.type
    with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
        outputs = net(pixels, mask)
    total = criterion.weighted_total(criterion(outputs, targets))
    total.backward()
    grads = {n: p.grad.float().clone() for n, p in net.named_parameters() if p.grad is not None}
    return float(total.detach()), grads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="bf16-mixed", choices=list(AUTOCAST))
    parser.add_argument("--experiment", default="r50")
    # dropout 0: the compiled graph draws other masks than eager, which would hide the compiler's
    # own differences
    parser.add_argument("--override", action="append",
                        default=["model.net.transformer.dropout=0.0"])  # fmt: skip
    parser.add_argument("--sizes", default="192x256,256x320,320x192,256x256")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument(
        "--dynamic",
        action="store_true",
        help="compile with dynamic sizes at once (one compile instead of two)",
    )
    # aot_eager traces forward and backward as inductor does but runs them with eager kernels:
    # a difference that remains under it is Dynamo's or AOTAutograd's, not inductor's codegen
    parser.add_argument("--backend", default="inductor", choices=["inductor", "aot_eager"])
    parser.add_argument(
        "--cudnn-attention",
        action="store_true",
        help="keep cuDNN's attention kernel, which training turns off on CUDA",
    )
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), AUTOCAST[args.precision]
    if not args.cudnn_attention:  # as LitDETR trains
        turn_off_cudnn_attention(device)
    torch.manual_seed(0)
    eager, criterion = build(args.experiment, args.override)
    eager = eager.to(device).train()
    compiled = copy.deepcopy(eager)
    compiled.compile(dynamic=True if args.dynamic else None, backend=args.backend)
    targets = [{k: v.to(device) for k, v in t.items()} for t in _random_targets(args.batch)]
    failed = False
    for i, size in enumerate(args.sizes.split(",")):
        h, w = (int(s) for s in size.split("x"))
        gen = torch.Generator().manual_seed(i)
        pixels = torch.randn(args.batch, 3, h, w, generator=gen).to(device)
        mask = torch.zeros(args.batch, h, w, dtype=torch.bool)
        for b in range(args.batch):  # the first image fills the batch, as after padding
            mask[b, : h - 32 * (b % 2), : w - 32 * (b // 2 % 2)] = True
        mask = mask.to(device)
        loss_e, grads_e = step(eager, criterion, pixels, mask, targets, dtype)
        loss_c, grads_c = step(compiled, criterion, pixels, mask, targets, dtype)
        bad = [n for n, g in grads_c.items() if not torch.isfinite(g).all()]
        bad_eager = [n for n, g in grads_e.items() if not torch.isfinite(g).all()]
        diff = {n: (grads_c[n] - g).norm().item() for n, g in grads_e.items() if n in grads_c}
        worst = max(diff, key=lambda n: diff[n] / max(grads_e[n].norm().item(), 1e-12))
        overall = math.hypot(*diff.values()) / math.hypot(
            *(g.norm().item() for g in grads_e.values())
        )
        print(f"[compile_check] {args.backend} {args.precision} {h}x{w}: loss eager "
              f"{loss_e:.4f} compiled {loss_c:.4f}; grads finite eager {not bad_eager} "
              f"compiled {not bad}; relative grad "
              f"difference {overall:.3g} overall, {diff[worst] / grads_e[worst].norm():.3g} in "
              f"{worst}; non-finite in compiled: {bad[:8]}"
              f"{' ...' if len(bad) > 8 else ''}; in eager: {bad_eager[:8]}", flush=True)  # fmt: skip
        failed |= bool(bad) or not math.isfinite(loss_c)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
