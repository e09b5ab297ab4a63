"""Where a training step of the shapes preset goes: trunk, proposals, decoder, loss, backward,
optimizer, and the data pipeline per batch (figures, not assertions).

Composes experiments/shapes.yaml as ``make train`` does, takes real training batches from its
datamodule, and times each part with forward hooks over ``--steps`` steps after ``--warmup``
untimed ones. Validation's share of a run is in the run's csv log (WallBudget logs
``budget/train_s`` and ``budget/val_s`` per epoch). Run:
``python benchmarks/bench_shapes_profile.py [--steps 20] [hydra overrides, e.g. backbone=narrow_r18]``.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from detr_lightning.data.shapes import ensure_shapes_dataset
from detr_lightning.lit_module import drop_crowd
from detr_lightning.utils import conf_dir
from detr_lightning.utils.build import build_datamodule, build_model

REPO = Path(__file__).resolve().parents[1]


class _Timer:
    """Accumulates forward time of named modules via pre/post hooks."""

    def __init__(self) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self._start: dict[str, float] = {}

    def attach(self, name: str, module: torch.nn.Module) -> None:
        module.register_forward_pre_hook(
            lambda *_: self._start.__setitem__(name, time.perf_counter())
        )
        module.register_forward_hook(
            lambda *_: self.total.__setitem__(
                name, self.total[name] + time.perf_counter() - self._start[name]
            )
        )


def compose_shapes(overrides: list[str]) -> DictConfig:
    """The train config of ``experiment=shapes`` (or of the experiment in ``overrides``) as
    ``make train`` composes it in this checkout (its data/), HydraConfig set for interpolations."""
    if not any(o.startswith("experiment=") for o in overrides):
        overrides = ["experiment=shapes", *overrides]
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(REPO)
        cfg.paths.data_dir = str(REPO / "data")
    return cfg


def preset_for_training(overrides: list[str], results: str) -> tuple[Any, Any]:
    """(datamodule set up for fit, LitDETR in train mode) of the composed preset, seeded 0, its
    data generated if missing, outputs under ``benchmarks/results/<results>``."""
    cfg = compose_shapes(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(REPO / "benchmarks" / "results" / results)
    ensure_shapes_dataset(**cfg.data.generate_shapes)
    L.seed_everything(0)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    return datamodule, build_model(cfg, datamodule).train()


def profile(steps: int, warmup: int, overrides: list[str]) -> dict[str, float]:
    datamodule, lit = preset_for_training(overrides, "shapes_profile")
    net, criterion = lit.net, lit.criterion
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    timer = _Timer()
    for name, module in (("trunk", net.backbone), ("proposals", net.queries),
                         ("decoder", net.transformer.decoder)):  # fmt: skip
        timer.attach(name, module)
    loader = iter(datamodule.train_dataloader())
    parts: dict[str, float] = defaultdict(float)
    for i in range(warmup + steps):
        if i == warmup:
            timer.total.clear()
            parts.clear()
        t0 = time.perf_counter()
        batch = next(loader)
        t1 = time.perf_counter()
        targets = [drop_crowd(t) for t in batch.targets]
        out = net(batch.pixel_values, batch.pixel_mask, targets=targets)
        t2 = time.perf_counter()
        losses = criterion(out, targets)
        total = criterion.weighted_total(losses)
        t3 = time.perf_counter()
        optimizer.zero_grad()
        total.backward()
        t4 = time.perf_counter()
        optimizer.step()
        t5 = time.perf_counter()
        for key, dt in (("data (wait)", t1 - t0), ("forward", t2 - t1), ("matcher + loss", t3 - t2),
                        ("backward", t4 - t3), ("optimizer", t5 - t4)):  # fmt: skip
            parts[key] += dt
    figures = {k: 1000 * v / steps for k, v in parts.items()}
    figures.update({f"  of which {k}": 1000 * v / steps for k, v in timer.total.items()})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("overrides", nargs="*", help="hydra overrides of the shapes preset")
    args = parser.parse_args()
    steps = 5 if args.quick else args.steps
    figures = profile(steps, args.warmup, args.overrides)
    step = sum(v for k, v in figures.items() if not k.startswith(" "))
    extra = f" + {' '.join(args.overrides)}" if args.overrides else ""
    print(f"shapes preset{extra}, {torch.get_num_threads()} threads, ms per training step:")
    for key, value in figures.items():
        print(f"  {key:28s} {value:8.1f}   {100 * value / step:5.1f} %")
    print(f"  {'total':28s} {step:8.1f}")


if __name__ == "__main__":
    main()
