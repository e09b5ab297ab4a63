"""Can the decoder learn to correct a box? One training batch of the shapes preset, AdamW on the
denoising box losses alone, printing every layer's ``loss_giou_dn`` (figures, not assertions).

The denoising queries start from noised ground-truth boxes, so lowering their GIoU loss needs a
decoder that reads where the object's edges lie relative to the box it was given. With the noise
redrawn every step (as in training) only that reading helps; with ``--fixed-noise`` the same
noised boxes come back every step and the model can also memorise them, which tells a decoder
that cannot read the image apart from one that cannot learn at all (docs/convergence.md,
"Boxes the decoder can correct"). Run:
``python benchmarks/refinement_probe.py [--steps 100] [--fixed-noise] [hydra overrides]``.
"""

from __future__ import annotations

import argparse

import torch
from bench_shapes_profile import preset_for_training

from detr_lightning.lit_module import drop_crowd


def probe(steps: int, fixed_noise: bool, overrides: list[str], every: int = 20) -> None:
    datamodule, lit = preset_for_training(overrides, "refinement_probe")
    net, criterion = lit.net, lit.criterion
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    batch = next(iter(datamodule.train_dataloader()))
    targets = [drop_crowd(t) for t in batch.targets]
    for step in range(steps + 1):
        if fixed_noise:
            torch.manual_seed(123)  # the denoiser draws the same noised boxes every step
        losses = criterion(net(batch.pixel_values, batch.pixel_mask, targets=targets), targets)
        total = sum(v for k, v in losses.items() if k.startswith(("loss_giou_dn", "loss_bbox_dn")))
        optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)  # the preset's gradient_clip_val
        optimizer.step()
        if step % every == 0:
            layers = sorted(k for k in losses if k.startswith("loss_giou_dn"))
            print(f"step {step:4d}  " + "  ".join(f"{k} {losses[k].item():.3f}" for k in layers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--fixed-noise", action="store_true", help="the same noise every step")
    parser.add_argument("overrides", nargs="*", help="hydra overrides of the shapes preset")
    args = parser.parse_args()
    probe(args.steps, args.fixed_noise, args.overrides)


if __name__ == "__main__":
    main()
