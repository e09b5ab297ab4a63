"""A low precision that the CPU only emulates is named, with its fix, before the run starts."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from lit import loader, quiet_trainer, tiny_lit

from detr_lightning.utils import cpu_precision
from detr_lightning.utils.cpu_precision import (
    SlowPrecisionWarning,
    cpu_computes_natively,
    warn_if_cpu_emulates,
)


def _cpu_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU's instruction sets from")
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    pytest.skip("/proc/cpuinfo lists no flags")


def test_native_bf16_follows_the_cpus_instruction_sets() -> None:
    """oneDNN's bf16 kernels need AVX512's core subsets (F, BW, VL, DQ; every AVX512 server CPU
    since Skylake has them); AVX512-BF16 and AMX-BF16 then run them at twice the fp32 rate."""
    flags = _cpu_flags()
    assert cpu_computes_natively(torch.bfloat16) == ({"avx512f", "avx512bw", "avx512vl",
                                                      "avx512dq"} <= flags)  # fmt: skip


@pytest.fixture
def emulating_cpu(monkeypatch):
    """A CPU without native bf16/fp16 kernels, whatever this one has."""
    monkeypatch.setattr(
        cpu_precision, "cpu_computes_natively", lambda dtype: dtype == torch.float32
    )


@pytest.mark.parametrize(
    ("precision", "key", "fix"),
    [
        ("bf16-mixed", "trainer.precision", "trainer.precision=32-true"),
        ("16-mixed", "trainer.precision", "trainer.precision=32-true"),
        ("bf16-true", "trainer.precision", "trainer.precision=32-true"),
        (torch.bfloat16, "speed.dtype", "speed.dtype=null"),
        ("float16", "speed.dtype", "speed.dtype=null"),
    ],
)
def test_an_emulated_precision_warns_with_the_key_and_the_fix(
    emulating_cpu, precision, key, fix
) -> None:
    with pytest.warns(SlowPrecisionWarning, match=f"{key}={precision}") as record:
        assert warn_if_cpu_emulates(precision, "cpu", key)
    assert f"Fix: {fix}" in str(record[0].message)


@pytest.mark.parametrize(
    ("precision", "device"),
    [("32-true", "cpu"), ("32", "cpu"), (None, "cpu"), ("float32", "cpu"), ("bf16-mixed", "cuda")],
)
def test_float32_and_other_devices_do_not_warn(emulating_cpu, precision, device) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPrecisionWarning)
        assert not warn_if_cpu_emulates(precision, device, "trainer.precision")


def test_a_cpu_with_native_kernels_does_not_warn(monkeypatch) -> None:
    monkeypatch.setattr(cpu_precision, "cpu_computes_natively", lambda dtype: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPrecisionWarning)
        assert not warn_if_cpu_emulates("bf16-mixed", "cpu", "trainer.precision")


def test_litdetr_warns_before_its_first_step(emulating_cpu, tmp_path) -> None:
    """The check is one of LitDETR's own callbacks: no step runs once the warning is an error."""
    module = tiny_lit()
    trainer = quiet_trainer(tmp_path, precision="bf16-mixed", max_steps=1, limit_val_batches=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPrecisionWarning)
        with pytest.raises(SlowPrecisionWarning, match="trainer.precision=bf16-mixed"):
            trainer.fit(module, loader(1))
    assert trainer.global_step == 0


def test_litdetr_in_float32_runs_without_the_warning(emulating_cpu, tmp_path) -> None:
    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowPrecisionWarning)
        trainer.fit(tiny_lit(), loader(1))
    assert trainer.global_step == 1
