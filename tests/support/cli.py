"""Running the entry points as a user would, in a subprocess, on tiny settings."""

from __future__ import annotations

import os
import re
from pathlib import Path

import warm_cli

from detr_lightning.utils.unread_overrides import unread_overrides

TINY = [
    "data.num_workers=0",
    "data.batch_size=4",
    "data.val_batch_size=2",
    "data.train_transforms.scales=[96,112]",
    "data.train_transforms.max_size=160",
    "data.train_transforms.crop_resize_scales=[96]",
    "data.train_transforms.crop_size=[64,96]",
    "data.val_transforms.size=96",
    "data.val_transforms.max_size=160",
    "model.net.num_queries=8",
    "model.net.transformer.d_model=32",
    "model.net.transformer.nhead=4",
    "model.net.transformer.dim_feedforward=64",
    "model.net.transformer.num_encoder_layers=1",
    "model.net.transformer.num_decoder_layers=2",
    "callbacks.model_summary=null",
    "callbacks.progress_bar=null",
    "trainer.log_every_n_steps=1",
]
# DDP runs as users run them, with the progress bar: rank 0's alone starts collectives (the epoch
# metrics' reductions) that a collective of ours must not meet (utils/distributed.py)
TINY_WITH_BAR = [a for a in TINY if a != "callbacks.progress_bar=null"]
# predict, visualize and export refuse training-only keys (utils/unread_overrides.py)
INFER_TINY = [a for a in TINY if not unread_overrides([a], "predict")]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of the tests' CLI runs: this one, wandb offline, warnings hidden, then
    ``extra``."""
    return {**os.environ, "WANDB_MODE": "offline", "PYTHONWARNINGS": "ignore", **extra}


def run_cli(
    module: str, args: list[str], cwd: Path, timeout: int = 600, fails: bool = False
) -> str:
    """Run ``python -m detr_lightning.<module> args`` in ``cwd`` (forked from a warm interpreter:
    support/warm_cli.py); returns stdout+stderr. Asserts exit status 0, or non-zero with
    ``fails``."""
    proc = warm_cli.run(f"detr_lightning.{module}", args, cwd, cli_env(), timeout)
    out = proc.stdout + proc.stderr
    assert (proc.returncode != 0) if fails else (proc.returncode == 0), out[-4000:]
    return out


def run_dirs(out: str) -> list[Path]:
    return [Path(p) for p in re.findall(r"^run directory: (.+)$", out, flags=re.M)]
