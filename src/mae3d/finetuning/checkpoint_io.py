"""Read nnU-Net training checkpoints (``checkpoint_final.pth`` ...) with ``torch.load(weights_only=True)``.

nnU-Net itself loads them with ``weights_only=False``. Their content is plain apart from numpy
scalars: the logged losses / pseudo-Dice values and ``_best_ema`` are ``np.float64`` (results of
``np.mean``), which the weights-only unpickler refuses by default. Those are rebuilt by
``numpy._core.multiarray.scalar`` from a dtype and raw bytes - no code runs - so exactly that function
and the numeric dtype classes are allowed here and nothing else (``torch.device`` in ``init_args`` is
already on torch's own weights-only list).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["load_training_checkpoint"]


def _numpy_scalar_globals() -> list[Any]:
    core = getattr(np, "_core", None) or np.core  # numpy >= 2 / 1.x
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "int16", "int8",
                                          "uint8", "bool")]
    return [core.multiarray.scalar, np.dtype, *dtypes]


def load_training_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load an nnU-Net (or :class:`~mae3d.finetuning.trainer.FinetuneTrainer`) checkpoint safely.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file needs other Python globals (nothing was executed) or is not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln), type(e).__name__)
        raise ValueError(f"{path}: refused to load with weights_only=True ({reason}); nothing was executed") \
            from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    if not isinstance(ckpt, dict) or "network_weights" not in ckpt:
        raise ValueError(f"{path}: not an nnU-Net training checkpoint (no 'network_weights')")
    return ckpt
