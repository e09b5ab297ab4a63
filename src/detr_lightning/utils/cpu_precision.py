"""Whether this CPU computes bf16 / fp16 natively, and a warning before a run that it would crawl.

oneDNN's bf16 convolutions and matrix products need AVX512 (AVX512-BF16 or AMX run them at
about twice the fp32 rate); fp16 needs AVX512-FP16 or AMX-FP16. Without them PyTorch still
computes in those types, through reference kernels: on an AVX2-only CPU (AMD Zen 2) a bf16-mixed
R50 training step took 35x the fp32 step, a single 3x3 convolution 400x
(``benchmarks/bench_official.py``; README "Speed and GPU readiness"). The run would be correct
and useless, so ``trainer.precision=bf16-mixed`` / ``16-mixed`` on such a CPU, and
``predict speed.dtype=bfloat16``, warn with the fix before the first step. Nothing is changed:
the precision asked for is the precision run.
"""

from __future__ import annotations

import warnings

import lightning as L
import torch

__all__ = [
    "SlowPrecisionCheck",
    "SlowPrecisionWarning",
    "cpu_computes_natively",
    "warn_if_cpu_emulates",
]


class SlowPrecisionWarning(UserWarning):
    """A low precision that this CPU can only emulate (orders of magnitude slower than fp32)."""


def cpu_computes_natively(dtype: torch.dtype) -> bool:
    """Whether oneDNN has native kernels for ``dtype`` (float32 always) on this CPU."""
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if dtype == torch.float16:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    return True


def _low_precision_dtype(precision: str | torch.dtype | None) -> torch.dtype | None:
    """``trainer.precision`` ("bf16-mixed", "16-true", ...) or a dtype (or its name) -> the
    low-precision dtype it computes in, or None for float32 / float64."""
    if isinstance(precision, torch.dtype):
        return precision if precision in (torch.bfloat16, torch.float16) else None
    text = str(precision or "")
    if text.startswith("bf16") or text == "bfloat16":
        return torch.bfloat16
    if text.startswith("16") or text in ("float16", "half"):
        return torch.float16
    return None


def warn_if_cpu_emulates(
    precision: str | torch.dtype | None, device: torch.device | str, key: str
) -> bool:
    """Warn (:class:`SlowPrecisionWarning`) when ``precision`` on a CPU ``device`` has no native
    kernels here; ``key`` names the setting the fix changes (``trainer.precision``). Returns
    whether it warned."""
    dtype = _low_precision_dtype(precision)
    if torch.device(device).type != "cpu" or dtype is None or cpu_computes_natively(dtype):
        return False
    capability = torch.backends.cpu.get_cpu_capability()
    warnings.warn(
        f"{key}={precision}: this CPU ({capability}) has no native {dtype} kernels, so PyTorch "
        f"emulates them and every step runs tens to hundreds of times slower than float32 "
        f"(README 'Speed and GPU readiness'). Fix: {key}="
        f"{'32-true' if key == 'trainer.precision' else 'null'} here, or run on a CPU with "
        f"AVX512 (bf16) / AMX-FP16 (fp16), or a GPU.",
        SlowPrecisionWarning,
        stacklevel=2,
    )
    return True


class SlowPrecisionCheck(L.Callback):
    """Before fit, validate, test or predict: warn when ``trainer.precision`` is a low precision
    that the run's CPU can only emulate."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        warn_if_cpu_emulates(trainer.precision, trainer.strategy.root_device, "trainer.precision")
