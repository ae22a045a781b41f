"""The mae3d pre-training checkpoint: a self-describing dict that loads with ``weights_only=True``.

Layout (``format`` ``"mae3d-pretrain"``, ``version`` 1)::

    {"format": "mae3d-pretrain", "version": 1,
     "network_weights": {name: Tensor},         # state_dict of the plain (unwrapped) U-Net
     "architecture": {"network_class_name", "arch_kwargs", "_kw_requires_import"},  # nnU-Net plans style
     "pretrain": {"method", "spacing", "patch_size", "normalization", "orientation",
                  "in_channels", "num_output_channels", ...optional extras, e.g. "transpose_forward"},
     "keys": {"stem": "encoder.stem", "encoder": "encoder.stages", "in_proj": [module names]},
     "config": {...resolved run config...}, "provenance": {...},
     # optional training state for resuming, dropped by strip_training_state() / every export:
     "optimizer_state", "scheduler_state", "grad_scaler_state", "epoch", "global_step",
     "rng_state", "loader_seed", "logging"}

``pretrain.spacing`` and ``pretrain.patch_size`` are listed in the axis order of the pre-training arrays:
SimpleITK's array order of each file (``mae3d prepare``'s, the order nnU-Net reads), transposed by
the optional ``pretrain.transpose_forward`` (absent = identity; set only by nnssl imports whose plan
transposes). ``orientation`` is ``"as-stored"`` (no reorientation); ``"RAS"`` marks checkpoints of older
mae3d versions, pre-trained on RAS-reoriented arrays. ``normalization`` is ``"zscore"`` (whole cropped
box) or ``"zscore-nonzero"`` (non-zero region); fine-tuning plans follow it.

Everything inside is a tensor, dict, list, tuple, str, int, float, bool or None, so the file loads with
``torch.load(weights_only=True)`` (no numpy objects, no custom classes; RNG states are stored as
tensors, see :func:`capture_rng_state`). Loading never unpickles anything else (beyond numpy scalars,
see :func:`load_weights_only`): a file that needs other Python globals is refused with
:class:`UnsafeCheckpointError` before any of it runs.

:func:`load_weights_only` is mae3d's one way to read any ``.pth`` file (mae3d, nnssl/OpenMind, nnU-Net
training checkpoints, exports): every other module calls it.
"""

from __future__ import annotations

import os
import pickle
import random
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mae3d.io.atomic import atomic_path
from mae3d.models import (
    KEY_TO_ENCODER,
    KEY_TO_STEM,
    KEYS_TO_IN_PROJ,
    NETWORK_CLASS_NAME,
    ArchitectureError,
    canonical_architecture,
)

__all__ = [
    "FORMAT",
    "TRAINING_STATE_KEYS",
    "VERSION",
    "CheckpointError",
    "UnsafeCheckpointError",
    "capture_rng_state",
    "default_keys",
    "load_checkpoint",
    "load_weights_only",
    "make_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
    "strip_training_state",
    "to_weights_only_safe",
    "validate",
]

FORMAT = "mae3d-pretrain"
VERSION = 1
#: keys only needed to resume pre-training; never part of an exported / transferred checkpoint.
TRAINING_STATE_KEYS: tuple[str, ...] = ("optimizer_state", "scheduler_state", "grad_scaler_state", "epoch",
                                        "global_step", "rng_state", "loader_seed", "logging",
                                        "method_state")
_REQUIRED = ("format", "version", "network_weights", "architecture", "pretrain", "keys", "config",
             "provenance")
_PRETRAIN_REQUIRED = ("method", "spacing", "patch_size", "normalization", "orientation", "in_channels",
                      "num_output_channels")
_SAFE_SCALARS = (str, int, float, bool, type(None))

# stem / encoder / input-projection module names of the dynamic_network_architectures U-Nets (the same
# values the classes set as key_to_stem, key_to_encoder, keys_to_in_proj)
_DEFAULT_KEYS = {
    NETWORK_CLASS_NAME: {"stem": KEY_TO_STEM, "encoder": KEY_TO_ENCODER, "in_proj": list(KEYS_TO_IN_PROJ)},
    "dynamic_network_architectures.architectures.unet.PlainConvUNet": {
        "stem": "encoder.stages.0", "encoder": "encoder.stages",
        "in_proj": ["encoder.stages.0.0.convs.0.conv", "encoder.stages.0.0.convs.0.all_modules.0"]},
}


class CheckpointError(ValueError):
    """A checkpoint file or dict is malformed; the message names the file (or key) and the problem."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint file needs Python globals beyond tensors and plain containers; it was not executed."""


# ----------------------------------------------------------------------------------------------- types
def to_weights_only_safe(obj: Any) -> Any:
    """Convert numpy arrays to tensors, numpy scalars to Python numbers and paths to strings, recursively.

    Use on anything (configs, logs, RNG states) before putting it into a checkpoint.
    """
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, to_weights_only_safe(v)) for k, v in obj.items())
    if isinstance(obj, Mapping):
        return {k: to_weights_only_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_weights_only_safe(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_weights_only_safe(v) for v in obj)
    return obj


def _check_safe(obj: Any, where: str) -> None:
    """Raise CheckpointError at the first value that torch.load(weights_only=True) could not read back."""
    if isinstance(obj, torch.Tensor) or type(obj) in _SAFE_SCALARS:
        return
    if type(obj) in (dict, OrderedDict):
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise CheckpointError(f"{where}: dict key {k!r} of type {type(k).__name__} is not allowed")
            _check_safe(v, f"{where}.{k}")
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _check_safe(v, f"{where}[{i}]")
        return
    raise CheckpointError(f"{where}: value of type {type(obj).__module__}.{type(obj).__qualname__} cannot be "
                          "stored (only tensors, dicts, lists, tuples, str, int, float, bool, None; "
                          "see to_weights_only_safe)")


# ----------------------------------------------------------------------------------------------- RNG
def capture_rng_state() -> dict[str, Any]:
    """The torch, CUDA, numpy and Python RNG states of this process, as tensors (weights-only safe)."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"bit_generator": str(np_state[0]), "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "python": {"version": int(py_version), "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss_next": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore RNG states written by :func:`capture_rng_state` (CUDA only if present in both)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["bit_generator"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------------------------- build
def default_keys(architecture: Mapping[str, Any]) -> dict[str, Any]:
    """Stem / encoder / input-projection module names for a DNA U-Net architecture."""
    name = canonical_architecture(architecture)["network_class_name"]
    try:
        keys = _DEFAULT_KEYS[name]
    except KeyError:
        raise CheckpointError(f"no default stem/encoder keys for {name}; pass keys explicitly") from None
    return {"stem": keys["stem"], "encoder": keys["encoder"], "in_proj": list(keys["in_proj"])}


def make_checkpoint(network_weights: Mapping[str, torch.Tensor], architecture: Mapping[str, Any],
                    pretrain: Mapping[str, Any], *, keys: Mapping[str, Any] | None = None,
                    config: Mapping[str, Any] | None = None, provenance: Mapping[str, Any] | None = None,
                    **training_state: Any) -> dict[str, Any]:
    """Assemble (and validate) a mae3d checkpoint dict.

    Args:
        network_weights: ``network.state_dict()`` of the plain network (no DDP/compile wrapper).
        architecture: nnU-Net-style architecture description (class names as strings).
        pretrain: method, spacing, patch_size, normalization, orientation, in_channels, num_output_channels.
        keys: stem/encoder/in_proj names; default: those of the architecture's class.
        config, provenance: resolved run config and provenance (plain data).
        training_state: any of ``TRAINING_STATE_KEYS`` for resuming.
    """
    unknown = sorted(set(training_state) - set(TRAINING_STATE_KEYS))
    if unknown:
        raise CheckpointError(f"unknown training-state keys {unknown}; valid: {list(TRAINING_STATE_KEYS)}")
    arch = canonical_architecture(architecture)
    ckpt: dict[str, Any] = {
        "format": FORMAT, "version": VERSION,
        "network_weights": OrderedDict((k, v.detach().cpu()) for k, v in network_weights.items()),
        "architecture": arch,
        "pretrain": to_weights_only_safe(dict(pretrain)),
        "keys": dict(keys) if keys is not None else default_keys(arch),
        "config": to_weights_only_safe(dict(config or {})),
        "provenance": to_weights_only_safe(dict(provenance or {})),
        **to_weights_only_safe(training_state),
    }
    validate(ckpt)
    return ckpt


def strip_training_state(ckpt: Mapping[str, Any]) -> dict[str, Any]:
    """A shallow copy of ``ckpt`` without the resume-only keys (optimizer, scaler, RNG, ...)."""
    return {k: v for k, v in ckpt.items() if k not in TRAINING_STATE_KEYS}


# ----------------------------------------------------------------------------------------------- validate
def _is_vec(v: Any, n: int, typ: type | tuple[type, ...]) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) == n
            and all(isinstance(x, typ) and not isinstance(x, bool) and x > 0 for x in v))


def validate(ckpt: Any, *, source: str | os.PathLike | None = None) -> None:
    """Check that ``ckpt`` is a complete, consistent mae3d checkpoint that loads with weights_only.

    Raises ``CheckpointError`` (or ``UnsafeClassError`` for a class name off the allowlist) naming
    ``source`` (a file) and the offending key.
    """
    where = str(source) if source is not None else "checkpoint"
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{where}: expected a dict, got {type(ckpt).__name__}")
    if ckpt.get("format") != FORMAT:
        hint = " (an nnssl checkpoint: use mae3d.transfer.nnssl.import_nnssl)" \
            if "nnssl_adaptation_plan" in ckpt else ""
        raise CheckpointError(f"{where}: not a mae3d pre-training checkpoint "
                              f"(format={ckpt.get('format')!r}){hint}")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{where}: unsupported checkpoint version {ckpt.get('version')!r} (this mae3d "
                              f"reads version {VERSION})")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{where}: missing keys {missing}")
    weights = ckpt["network_weights"]
    if not isinstance(weights, Mapping) or not weights:
        raise CheckpointError(f"{where}: network_weights must be a non-empty dict")
    for k, v in weights.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{where}: network_weights[{k!r}] is not a tensor")
    try:
        canonical_architecture(ckpt["architecture"], source=where)
    except ArchitectureError as e:
        raise CheckpointError(str(e)) from None
    pre = ckpt["pretrain"]
    if not isinstance(pre, Mapping):
        raise CheckpointError(f"{where}: pretrain must be a dict")
    missing = [k for k in _PRETRAIN_REQUIRED if k not in pre]
    if missing:
        raise CheckpointError(f"{where}: pretrain lacks {missing}")
    checks = (
        ("method", isinstance(pre["method"], str) and bool(pre["method"]), "a non-empty string"),
        ("spacing", _is_vec(pre["spacing"], 3, (int, float)), "3 positive numbers"),
        ("patch_size", _is_vec(pre["patch_size"], 3, int), "3 positive integers"),
        ("orientation", pre["orientation"] is None or isinstance(pre["orientation"], str),
         "a string or None"),
        ("in_channels", type(pre["in_channels"]) is int and pre["in_channels"] >= 1, "an integer >= 1"),
        ("num_output_channels", type(pre["num_output_channels"]) is int and pre["num_output_channels"] >= 1,
         "an integer >= 1"),
    )
    for key, ok, expected in checks:
        if not ok:
            raise CheckpointError(f"{where}: pretrain.{key} must be {expected}, got {pre[key]!r}")
    tf = pre.get("transpose_forward")
    if tf is not None and not (isinstance(tf, (list, tuple)) and sorted(tf) == [0, 1, 2]
                               and all(type(a) is int for a in tf)):
        raise CheckpointError(f"{where}: pretrain.transpose_forward must be a permutation of [0, 1, 2], "
                              f"got {tf!r}")
    keys = ckpt["keys"]
    if not (isinstance(keys, Mapping) and isinstance(keys.get("stem"), str)
            and isinstance(keys.get("encoder"), str)
            and isinstance(keys.get("in_proj"), (list, tuple)) and keys["in_proj"]
            and all(isinstance(k, str) for k in keys["in_proj"])):
        raise CheckpointError(f"{where}: keys must be {{'stem': str, 'encoder': str, 'in_proj': [str, ...]}}")
    for part in ("stem", "encoder"):
        if not any(k.startswith(keys[part] + ".") for k in weights):
            raise CheckpointError(f"{where}: no network weight under keys.{part} = {keys[part]!r}")
    for k in keys["in_proj"]:
        w = weights.get(f"{k}.weight")
        if w is None:
            raise CheckpointError(f"{where}: input projection weight {k}.weight missing from network_weights")
        if w.ndim < 2 or w.shape[1] != pre["in_channels"]:
            raise CheckpointError(f"{where}: {k}.weight has shape {tuple(w.shape)}, which does not match "
                                  f"pretrain.in_channels = {pre['in_channels']}")
    for key in ("config", "provenance"):
        if not isinstance(ckpt[key], Mapping):
            raise CheckpointError(f"{where}: {key} must be a dict")
    _check_safe(dict(ckpt), where)


# ----------------------------------------------------------------------------------------------- I/O
def save_checkpoint(path: str | os.PathLike, ckpt: Mapping[str, Any], *, overwrite: bool = False) -> Path:
    """Validate ``ckpt`` and write it atomically with ``torch.save``.

    Args:
        overwrite: replace an existing file (e.g. a rolling ``checkpoint_latest.pth``); otherwise an
            existing file raises ``FileExistsError``.
    """
    validate(ckpt, source=path)
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save(dict(ckpt), tmp)
    return Path(path)


def _unpickling_reason(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "Unsupported" in ln:
            return ln
    return lines[-1] if lines else type(e).__name__


def _numpy_scalar_globals() -> list[Any]:
    """What unpickling a numpy scalar needs: ``multiarray.scalar``, ``np.dtype`` and numeric dtype classes.

    nnU-Net's training checkpoints hold ``np.float64`` values (logged losses, ``_best_ema``: results of
    ``np.mean``), which torch's weights-only unpickler refuses by default. A scalar is rebuilt by
    ``numpy._core.multiarray.scalar`` from a dtype and raw bytes - no code runs - so exactly that function
    and these dtype classes are added, nothing else (``torch.device`` is already on torch's own list).
    """
    core = getattr(np, "_core", None) or np.core  # numpy >= 2 / 1.x
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "int16", "int8",
                                          "uint8", "bool")]
    return [core.multiarray.scalar, np.dtype, *dtypes]


def load_weights_only(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with numpy scalars allowed and one-line errors naming the file.

    The single checkpoint-reading path of mae3d (mae3d / nnssl / nnU-Net files alike).

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle needs globals outside torch's weights-only set and numpy's
            scalar types (e.g. a ``__reduce__`` calling ``os.system``); nothing in it was executed.
        CheckpointError: not a readable PyTorch file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path}: refused to load with weights_only=True ({_unpickling_reason(e)}); "
            "nothing in it was executed") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from None


def load_checkpoint(path: str | os.PathLike, *, check: bool = True) -> dict[str, Any]:
    """Load a mae3d checkpoint (weights-only) and, unless ``check`` is False, :func:`validate` it."""
    ckpt = load_weights_only(path)
    if check:
        validate(ckpt, source=path)
    return ckpt
