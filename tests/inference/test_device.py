"""``device=`` of predict and visualize: a device torch cannot use is named up front, with the
fix, instead of failing once the model moves there."""

from __future__ import annotations

import pytest
import torch

from detr_lightning.errors import ExplainedError
from detr_lightning.inference.device import resolve_device
from detr_lightning.utils.config_check import ConfigError


def _gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def _refusal(name: str) -> str:
    with pytest.raises(ConfigError) as err:
        resolve_device(name)
    assert isinstance(err.value, ExplainedError)  # the entry points print it without traceback
    message = str(err.value)
    assert message.startswith(f"device={name}: ") and "\n" not in message
    return message


@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_a_cuda_device_without_a_visible_gpu_is_a_config_error(monkeypatch, name: str) -> None:
    """``predict device=cuda`` with ``CUDA_VISIBLE_DEVICES=""`` ended in torch's "Found no
    NVIDIA driver" RuntimeError under Hydra's traceback, once the model moved there."""
    _gpus(monkeypatch, 0)
    message = _refusal(name)
    assert "no CUDA GPU" in message and "Fix: device=cpu, or device=auto" in message
    # what needs no GPU still resolves
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_cuda_device_with_a_visible_gpu_is_kept(monkeypatch) -> None:
    _gpus(monkeypatch, 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cuda") == resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize(("visible", "shown"), [(None, "unset"), ("3,5", "'3,5'")])
def test_a_cuda_index_past_the_visible_gpus_names_their_count(
    monkeypatch, visible: str | None, shown: str
) -> None:
    """``device=cuda:2`` on two visible GPUs failed in torch's "invalid device ordinal" once
    the model moved there; CUDA_VISIBLE_DEVICES=3,5 numbers them cuda:0 and cuda:1."""
    _gpus(monkeypatch, 2)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    message = _refusal("cuda:2")
    assert "torch sees 2 CUDA GPU(s), cuda:0 to cuda:1" in message
    assert f"CUDA_VISIBLE_DEVICES={shown}" in message and "Fix: device=cuda:0" in message


def test_mps_without_the_mps_backend_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    message = _refusal("mps")
    assert "MPS backend is not available" in message and "Fix: device=cpu" in message
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CUDA", "0"])
def test_a_malformed_device_names_the_valid_choices(name: str) -> None:
    """torch's own error ("Expected one of cpu, cuda, ipu, xpu, mkldnn, ...") came from deep
    in the run and listed two dozen backends predict does not support."""
    choices = "auto, cpu, cuda, cuda:N or mps"
    assert _refusal(name) == f"device={name}: not a device name; use one of {choices}"


@pytest.mark.parametrize("name", ["meta", "xpu", "hip:0", "ipu"])
def test_a_device_type_predict_does_not_run_on_is_refused_before_loading(name: str) -> None:
    """torch parses these names, so they passed the check and failed later, after the weights
    and images were read (a ``meta`` tensor holds no data to draw or write)."""
    kind = name.split(":")[0]
    assert _refusal(name) == (
        f"device={name}: torch names a {kind} device, which predict and visualize do not run "
        "on; use one of auto, cpu, cuda, cuda:N or mps"
    )
