"""Device and precision resolution shared by every stage (pre-training, fine-tuning, prediction).

One place decides what ``device: auto`` means and which autocast dtype a ``precision`` setting
gives, so the stages cannot drift apart:

* ``resolve_device("auto")`` -> ``"cuda"`` when CUDA is available, else ``"cpu"``; ``"cuda"``
  without CUDA is an error (never a silent fall-back to the CPU);
* ``torch_device(name, local_rank)`` -> the ``torch.device`` of this process (``cuda:<local_rank>``
  under ``torchrun``; also ``mps``);
* ``autocast_dtype(precision, device)`` -> ``None`` (fp32) or the autocast dtype; ``auto`` is bf16 on
  CUDA and fp32 elsewhere; fp16 needs CUDA (its GradScaler is CUDA-only).
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["DEVICES", "PRECISIONS", "Precision", "autocast_dtype", "resolve_device", "torch_device"]

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
Precision = Literal["auto", "fp32", "bf16", "fp16"]


def resolve_device(device: str) -> str:
    """``cpu``, ``cuda`` or ``mps`` for a requested ``auto`` / ``cpu`` / ``cuda`` / ``mps``.

    Raises:
        ValueError: an unknown name, or ``cuda``/``mps`` asked for but not available.
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in DEVICES:
        raise ValueError(f"device: expected auto, cpu or cuda (or mps on Apple GPUs), got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but CUDA is not available; use --device cpu")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device mps requested but MPS is not available; use --device cpu")
    return device


def torch_device(device: str, local_rank: int = 0) -> torch.device:
    """The ``torch.device`` of this process; selects ``cuda:<local_rank>`` as the current CUDA device."""
    name = resolve_device(device)
    if name == "cuda":
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def autocast_dtype(precision: str, device: torch.device | str) -> torch.dtype | None:
    """Autocast dtype of ``precision`` on ``device`` (None = plain fp32).

    Raises:
        ValueError: an unknown precision, or fp16 off CUDA.
    """
    dev_type = torch.device(device).type
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        precision = "bf16" if dev_type == "cuda" else "fp32"
    if precision == "fp16" and dev_type != "cuda":
        raise ValueError("precision fp16 needs CUDA (use bf16 or fp32 on CPU)")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
