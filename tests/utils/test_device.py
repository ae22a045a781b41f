"""The one device/precision helper shared by pre-training, fine-tuning and prediction."""

from __future__ import annotations

import pytest
import torch

from mae3d.finetuning import config as ft_config
from mae3d.pretraining import distributed
from mae3d.utils.device import autocast_dtype, resolve_device, torch_device


def test_resolve_device_and_torch_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert torch_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available; use --device cpu"):
            torch_device("cuda")
    with pytest.raises(ValueError, match="expected auto, cpu or cuda"):
        resolve_device("gpu")


def test_stages_share_the_helper():
    assert ft_config.resolve_device is resolve_device
    assert distributed.torch_device is torch_device


def test_autocast_dtype():
    assert autocast_dtype("auto", "cpu") is None
    assert autocast_dtype("auto", "cuda") is torch.bfloat16
    assert autocast_dtype("bf16", "cpu") is torch.bfloat16
    assert autocast_dtype("fp16", "cuda") is torch.float16
    with pytest.raises(ValueError, match="fp16 needs CUDA"):
        autocast_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="precision: expected one of"):
        autocast_dtype("fp8", "cpu")
