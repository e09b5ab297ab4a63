"""Panoptic model figures on CPU, next to the detector's: training step and inference forward.

Two model sizes, each timed as the detector alone (``DETR``/``ConvergenceDETR``: class + box
losses), as the panoptic model trained jointly (``DETRsegm``: + mask head, mask losses), as the
paper's second stage (frozen detector, only the mask head trains) and at inference (batch 1):

Training forwards compute the masks of the matched queries only (``DETRsegm(matcher=...)``,
as ``head=panoptic`` configures it); inference computes every query's mask.

* ``r50``: the paper's R50 model (random init, frozen BN), batch 2 at 512x512, 100 queries,
  250 logits (COCO panoptic: 133 classes in a 250-slot head as official; here 134), 8 targets per
  image with masks; comparable with ``bench_core.py``;
* ``shapes``: the CPU demo's model, composed from ``experiment=shapes_panoptic`` (compact trunk,
  convergence levers), the preset's batch (``data.batch_size``, 8) at 160x224, 8 classes.

Run: ``python benchmarks/bench_panoptic.py [--only r50|shapes] [--steps 3]``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

from detr_lightning.detr.criterion import SetCriterion
from detr_lightning.detr.matcher import HungarianMatcher
from detr_lightning.detr.model import build_detr
from detr_lightning.detr.segmentation import DETRsegm

WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
MASK_WEIGHTS = {**WEIGHTS, "loss_mask": 1.0, "loss_dice": 1.0}


def _targets(batch: int, size: tuple[int, int], classes: int, per_image: int = 8) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(batch):
        centre = torch.rand(per_image, 2, generator=gen) * 0.6 + 0.2
        wh = torch.rand(per_image, 2, generator=gen) * 0.3 + 0.05
        masks = torch.zeros(per_image, *size, dtype=torch.bool)
        for k, ((cx, cy), (w, h)) in enumerate(zip(centre.tolist(), wh.tolist(), strict=True)):
            y0, x0 = int((cy - h / 2) * size[0]), int((cx - w / 2) * size[1])
            masks[k, y0 : y0 + int(h * size[0]) + 1, x0 : x0 + int(w * size[1]) + 1] = True
        labels = torch.randint(0, classes, (per_image,), generator=gen)
        out.append({"labels": labels, "boxes": torch.cat([centre, wh], 1), "masks": masks})
    return out


def _time(fn: Callable[[], None], steps: int) -> float:
    fn()  # warm-up: allocator, optimizer state
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def measure(
    name: str,
    detector: nn.Module,
    segm: DETRsegm,
    criteria: tuple[nn.Module, nn.Module],
    batch: int,
    size: tuple[int, int],
    steps: int,
) -> None:
    """Print training-step and inference times of the detector and its panoptic wrapper."""
    pixels = torch.randn(batch, 3, *size)
    mask = torch.ones(batch, *size, dtype=torch.bool)
    targets = _targets(batch, size, criteria[0].num_classes)

    def step(model: nn.Module, criterion: nn.Module) -> Callable[[], None]:
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)

        def run() -> None:
            losses = criterion(model(pixels, mask, targets=targets), targets)
            optimizer.zero_grad(set_to_none=True)
            criterion.weighted_total(losses).backward()
            torch.nn.utils.clip_grad_norm_(params, 0.1)
            optimizer.step()

        return run

    def infer(model: nn.Module) -> float:
        model.eval()
        with torch.inference_mode():
            seconds = _time(lambda: model(pixels[:1], mask[:1]), steps)
        model.train()
        return seconds

    rows = {
        "detector": (_time(step(detector, criteria[0]), steps), infer(detector)),
        "panoptic (joint)": (_time(step(segm, criteria[1]), steps), infer(segm)),
    }
    frozen = DETRsegm(segm.detr, freeze_detr=True, matcher=segm.matcher)
    frozen.mask_head, frozen.bbox_attention = segm.mask_head, segm.bbox_attention
    rows["panoptic (stage 2, frozen detector)"] = (_time(step(frozen, criteria[1]), steps), 0.0)
    print(f"[panoptic] {name}: batch {batch} at {size[0]}x{size[1]}")
    base_step, base_infer = rows["detector"]
    for row, (step_s, infer_s) in rows.items():
        inference = f", inference (batch 1) {infer_s:.3f} s" if infer_s else ""
        print(f"[panoptic]   {row:<36} training step {step_s:.3f} s (x{step_s / base_step:.2f})"
              + inference + (f" (x{infer_s / base_infer:.2f})" if infer_s else ""))  # fmt: skip


def bench_r50(steps: int) -> None:
    classes = 134
    kwargs = dict(backbone="resnet50", num_classes=classes)
    torch.manual_seed(0)
    detector = build_detr(**kwargs)
    # As head=panoptic: training forwards compute the masks of the matched queries only.
    segm = DETRsegm(build_detr(return_interm_layers=True, **kwargs), matcher=HungarianMatcher())
    criteria = (
        SetCriterion(classes, HungarianMatcher(), weight_dict=WEIGHTS),
        SetCriterion(classes, HungarianMatcher(), losses=("labels", "boxes", "cardinality",
                     "masks"), weight_dict=MASK_WEIGHTS),
    )  # fmt: skip
    measure("r50 (paper model)", detector, segm, criteria, 2, (512, 512), steps)


def bench_shapes(steps: int) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import open_dict

    from detr_lightning.utils import conf_dir

    with initialize_config_dir(conf_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=shapes_panoptic"])
    with open_dict(cfg):
        cfg.model.num_classes = 8
    torch.manual_seed(0)
    lit = instantiate(cfg.model, _convert_="all")
    # The detector alone trains with the stage-1 losses (no masks group).
    with open_dict(cfg):
        cfg.model.criterion.losses = ["labels", "boxes", "cardinality"]
        for key in ("loss_mask", "loss_dice"):
            del cfg.model.criterion.weight_dict[key]
    box_criterion = instantiate(cfg.model.criterion, _convert_="all")
    measure("shapes_panoptic (CPU demo model)", lit.net.detr, lit.net,
            (box_criterion, lit.criterion), cfg.data.batch_size, (160, 224), steps)  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=["r50", "shapes"])
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if args.only != "shapes":
        bench_r50(args.steps)
    if args.only != "r50":
        bench_shapes(args.steps)
