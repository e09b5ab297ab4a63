"""NoCudnnAttention: cuDNN's SDPA kernel is off while a model trains on CUDA, and only then."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lit import tiny_lit

from detr_lightning.utils.attention_backend import NoCudnnAttention, turn_off_cudnn_attention


def _trainer(device: str) -> SimpleNamespace:
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))


@pytest.fixture
def cudnn_sdp_on():
    before = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)
    yield
    torch.backends.cuda.enable_cudnn_sdp(before)


def test_fit_on_cuda_turns_cudnn_attention_off_and_back_on(cudnn_sdp_on) -> None:
    callback = NoCudnnAttention()
    callback.on_fit_start(_trainer("cuda"), None)
    assert not torch.backends.cuda.cudnn_sdp_enabled()
    assert (
        torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
    )
    callback.on_fit_end(_trainer("cuda"), None)
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_a_failed_fit_restores_cudnn_attention(cudnn_sdp_on) -> None:
    callback = NoCudnnAttention()
    callback.on_fit_start(_trainer("cuda"), None)
    callback.on_exception(_trainer("cuda"), None, RuntimeError("stopped"))
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_a_setting_already_off_stays_off(cudnn_sdp_on) -> None:
    torch.backends.cuda.enable_cudnn_sdp(False)
    callback = NoCudnnAttention()
    callback.on_fit_start(_trainer("cuda"), None)
    callback.on_fit_end(_trainer("cuda"), None)
    assert not torch.backends.cuda.cudnn_sdp_enabled()


def test_fit_on_cpu_leaves_the_setting_alone(cudnn_sdp_on) -> None:
    callback = NoCudnnAttention()
    callback.on_fit_start(_trainer("cpu"), None)
    assert torch.backends.cuda.cudnn_sdp_enabled()
    callback.on_fit_end(_trainer("cpu"), None)
    assert torch.backends.cuda.cudnn_sdp_enabled()


def test_the_function_reports_the_previous_setting_on_cuda_only(cudnn_sdp_on) -> None:
    assert turn_off_cudnn_attention(torch.device("cpu")) is None
    assert torch.backends.cuda.cudnn_sdp_enabled()
    assert turn_off_cudnn_attention(torch.device("cuda")) is True
    assert turn_off_cudnn_attention(torch.device("cuda")) is False


@pytest.mark.parametrize("cudnn_attention", [False, True])
def test_lit_module_adds_the_switch_unless_cudnn_attention(cudnn_attention: bool) -> None:
    lit = tiny_lit(cudnn_attention=cudnn_attention)
    added = [c for c in lit.configure_callbacks() if isinstance(c, NoCudnnAttention)]
    assert len(added) == (0 if cudnn_attention else 1)
