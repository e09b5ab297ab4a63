"""predict's device= under backend=onnxruntime picks ONNX Runtime's providers (it was ignored:
ONNX Runtime took CUDA whenever it had it, device=cpu or not)."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from detr_lightning.inference.onnx_runtime import onnx_providers
from detr_lightning.utils.config_check import ConfigError

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


@pytest.fixture
def gpu_build(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])


def test_auto_keeps_onnxruntimes_default_and_cpu_is_the_cpu_alone(gpu_build) -> None:
    assert onnx_providers("auto") is None and onnx_providers(None) is None
    assert onnx_providers("cpu") == [CPU]


def test_cuda_names_the_gpu(gpu_build) -> None:
    assert onnx_providers("cuda") == [(CUDA, {"device_id": 0}), CPU]
    assert onnx_providers("cuda:1") == [(CUDA, {"device_id": 1}), CPU]


def test_cuda_without_the_provider_and_other_devices_are_refused(monkeypatch) -> None:
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    with pytest.raises(ConfigError, match=r"device=cuda: this onnxruntime has no CUDA provider"):
        onnx_providers("cuda")
    for name in ("mps", "cuda:x", "cuda:", "gpu"):
        with pytest.raises(ConfigError, match=rf"device={name}: backend=onnxruntime runs on auto"):
            onnx_providers(name)
