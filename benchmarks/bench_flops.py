"""GFLOPs of a forward pass of each paper preset, the first column of the paper's Table 1.

The paper counts with fvcore's ``flop_count`` (one fused multiply-add = one flop), averaged over
the first 100 COCO val2017 images at the evaluation size (shorter side 800, longer at most
1333). COCO is not on this machine, so the count is taken at the two commonest evaluation
sizes (COCO's 640x480 and 640x427 images: 800x1066 and 800x1199), and the paper's average
should lie near them. ``torch.utils.flop_counter`` counts 2 flops per multiply-add in
convolutions, matrix products and attention; halved here to fvcore's convention. Norms,
activations and the softmax are not counted (fvcore counts norms: well under 1% here).

Models are built from the presets exactly as training builds them (``utils.build.build_model``)
on the meta device: no weights, no memory, a few seconds per model.

Run: ``python benchmarks/bench_flops.py [--exp r50 dc5_r50 ...] [--size 800x1066 ...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
from pathlib import Path
from types import SimpleNamespace

import torch
from hydra import compose, initialize_config_dir
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
# Table 1 (GFLOPs) and the parameter counts of the paper / REFERENCE.md
PAPER = {"r50": (86, 41), "dc5_r50": (187, 41), "r101": (152, 60), "dc5_r101": (253, 60)}
COCO_CLASSES = {"detection": 91, "panoptic": 250}  # the official num_classes of each task
SIZES = ((800, 1066), (800, 1199))


def forward_gflops(net: nn.Module, height: int, width: int, device: str = "meta") -> float:
    """Multiply-adds (x1e9) of one ``net(pixel_values, pixel_mask)`` on a [1, 3, H, W] image."""
    pixels = torch.zeros(1, 3, height, width, device=device)
    mask = torch.ones(1, height, width, dtype=torch.bool, device=device)
    counter = FlopCounterMode(display=False)
    # no torch.no_grad(): FlopCounterMode's module tracker needs autograd on the inputs' path
    with counter:
        net(pixels, mask)
    return counter.get_total_flops() / 2e9


def preset_net(experiment: str, overrides: tuple[str, ...] = ()) -> nn.Module:
    """The network of ``experiment`` (conf/experiment), built on the meta device in eval mode,
    with COCO's class count of its task."""
    from detr_lightning.utils.build import build_model

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose("train", overrides=[f"experiment={experiment}", *overrides])
    if cfg.model.net.backbone.get("pretrained"):
        cfg.model.net.backbone.pretrained = False  # random weights count the same
    classes = COCO_CLASSES[cfg.get("task", "detection")]
    data = SimpleNamespace(num_classes=classes, label_to_category_id=None)
    with torch.device("meta"):
        lit = build_model(cfg, data, training=False)
    return lit.net.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exp", nargs="+", default=[*PAPER, "r50_panoptic"])
    parser.add_argument("--size", nargs="+", default=[f"{h}x{w}" for h, w in SIZES],
                        help="HxW of the (resized) input image")  # fmt: skip
    args = parser.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.size]
    logging.disable(logging.INFO)  # build_model's notes
    columns = [f"{h}x{w}" for h, w in sizes]
    print("[flops] GFLOPs (multiply-adds) of one forward; paper: Table 1's GFLOPs / params")
    print(f"[flops] {'preset':<16}{'params':>8}" + "".join(f"{c:>11}" for c in columns)
          + f"{'mean':>8}{'paper':>14}")  # fmt: skip
    for exp in args.exp:
        with contextlib.redirect_stdout(io.StringIO()):
            net = preset_net(exp)
        params = sum(p.numel() for p in net.parameters()) / 1e6
        gflops = [forward_gflops(net, h, w) for h, w in sizes]
        paper = PAPER.get(exp)
        ref = f"{paper[0]} / {paper[1]}M" if paper else "-"
        cells = "".join(f"{g:>11.1f}" for g in gflops)
        mean = sum(gflops) / len(gflops)
        print(f"[flops] {exp:<16}{params:>7.1f}M{cells}{mean:>8.1f}{ref:>14}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
