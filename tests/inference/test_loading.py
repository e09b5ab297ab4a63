"""Building the inference detector's device: a cuda device without a GPU is named up front."""

from __future__ import annotations

import pytest
import torch

from detr_lightning.errors import ExplainedError
from detr_lightning.inference.loading import resolve_device
from detr_lightning.utils.config_check import ConfigError


@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_a_cuda_device_without_a_visible_gpu_is_a_config_error(monkeypatch, name: str) -> None:
    """``predict device=cuda`` with ``CUDA_VISIBLE_DEVICES=""`` ended in torch's "Found no
    NVIDIA driver" RuntimeError under Hydra's traceback, once the model moved there."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        resolve_device(name)
    message = str(err.value)
    assert message.startswith(f"device={name}: ") and "no CUDA GPU" in message
    assert "Fix: device=cpu, or device=auto" in message
    assert isinstance(err.value, ExplainedError)  # the entry points print it without traceback
    # what needs no GPU still resolves
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_a_cuda_device_with_a_visible_gpu_is_kept(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda")
