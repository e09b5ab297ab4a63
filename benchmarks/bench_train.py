"""End-to-end training throughput of the CPU shapes preset, and the `make train EXP=shapes` run.

``bench_train()`` composes experiments/shapes.yaml exactly as ``make train`` does, then times
``--steps`` optimizer steps of ``Trainer.fit`` (data loading, forward, matcher + loss, backward,
clipping, AdamW) after ``--warmup`` untimed steps, and reports images/s. Without ``--quick`` it
also runs ``make train EXP=shapes`` and reports its wall time and final AP (minutes).
Figures, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from detr_lightning.data.shapes import ensure_shapes_dataset
from detr_lightning.utils import conf_dir
from detr_lightning.utils.build import build_datamodule, build_model

REPO = Path(__file__).resolve().parents[1]


class _StepTimer(L.Callback):
    """Wall time between the start of step ``warmup`` and the end of the last step."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.end = time.perf_counter()


def bench_train(steps: int = 20, warmup: int = 3, data_dir: str = "data") -> dict[str, float]:
    """Images/s and s/step of the shapes preset's training loop on this machine."""
    with initialize_config_dir(conf_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=shapes"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.root_dir = str(REPO)
        cfg.paths.data_dir = str(Path(data_dir).resolve())
        cfg.paths.output_dir = str(REPO / "benchmarks" / "results" / "bench_train")
    ensure_shapes_dataset(**cfg.data.generate_shapes)
    L.seed_everything(0)
    datamodule = build_datamodule(cfg)
    model = build_model(cfg, datamodule)
    timer = _StepTimer(warmup)
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=warmup + steps, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, gradient_clip_val=cfg.trainer.gradient_clip_val, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(model, datamodule=datamodule)
    seconds = timer.end - timer.start
    batch = cfg.data.batch_size
    return {
        "steps": steps,
        "batch_size": batch,
        "s_per_step": seconds / steps,
        "images_per_s": steps * batch / seconds,
        "torch_threads": torch.get_num_threads(),
    }


def bench_make_train(args: str = "") -> dict[str, float | str]:
    """Wall time of `make train EXP=shapes` and the AP it reaches (from its metrics.json)."""
    start = time.perf_counter()
    proc = subprocess.run(
        ["make", "train", "EXP=shapes", f"ARGS={args}", f"PY={sys.executable}"],
        cwd=REPO, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "offline"},
    )  # fmt: skip
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"make train failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    run_dir = re.findall(r"^run directory: (.+)$", proc.stdout, flags=re.M)[-1]
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    return {"wall_s": wall, "AP": metrics["AP"], "AP50": metrics["AP50"], "run_dir": run_dir}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--data-dir", default=str(REPO / "data"))
    parser.add_argument("--quick", action="store_true", help="skip the `make train` run")
    parser.add_argument("--make-args", default="", help="extra Hydra overrides for make train")
    args, _ = parser.parse_known_args()
    r = bench_train(args.steps, args.warmup, args.data_dir)
    print(f"shapes preset training: {r['images_per_s']:.1f} images/s, {r['s_per_step']:.3f} s/step "
          f"(batch {r['batch_size']}, {r['steps']} steps after {args.warmup} warm-up, "
          f"{r['torch_threads']} threads)")  # fmt: skip
    if not args.quick:
        m = bench_make_train(args.make_args)
        print(f"make train EXP=shapes: {m['wall_s'] / 60:.1f} min wall, AP {m['AP']:.3f}, "
              f"AP50 {m['AP50']:.3f} ({m['run_dir']})")  # fmt: skip


if __name__ == "__main__":
    main()
